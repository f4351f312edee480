//! Real-time messaging (DESIGN.md "Messages and delivery"): durable idempotent sends, history,
//! edits and deletes ([`messages`]); reactions and pins ([`reactions`]); the fan-out hub ([`hub`]); one `Connect` stream
//! ([`stream`]); and the pure rules they use ([`text`], [`ratelimit`]).

pub mod attachments;
pub mod hub;
pub mod messages;
pub mod ratelimit;
pub mod reactions;
pub mod search;
pub mod stream;
pub mod text;

pub use hub::Hub;
pub use messages::{ChatError, Messages};
