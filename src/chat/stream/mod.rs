//! One `Connect` stream: a [`session`] reads client frames, runs one [`follower`] per
//! subscribed room, and everything it says goes through one bounded [`out`] queue.
//!
//! Backpressure, end to end: the out queue holds [`OUT_QUEUE`] frames. When the client reads
//! slowly the queue fills; followers wait, fall behind in their room rings and catch up from
//! the store once the ring has moved past them (the room and its senders never wait for a
//! slow reader, and no event is lost or duplicated); the session waits too, and with at most
//! [`session::MAX_PENDING_SENDS`] sends awaiting their acks it stops reading client frames,
//! so a client that floods frames without reading is held back by the transport's flow
//! control instead of growing the server. A frame that cannot be queued for
//! `stuck_stream_timeout` ends the stream with `RESOURCE_EXHAUSTED`; the client resumes with
//! `after_seq` on reconnect.

mod follower;
mod listen;
mod out;
mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub use listen::{FRAME_QUEUE, Inbound, Listeners};
pub use out::{OUT_QUEUE, OutFrame, OutStream, code_name, stream_error};
pub use session::MAX_PENDING_SENDS;

use super::hub::Hub;
use super::messages::Messages;
use crate::auth::{Accounts, Principal};
use crate::proto;

/// What every stream needs from the server.
#[derive(Clone)]
pub struct StreamDeps {
    /// Sends, history.
    pub messages: Messages,
    /// Token checks for `Reauthenticate`.
    pub accounts: Accounts,
    /// Live feeds.
    pub hub: Arc<Hub>,
    /// Who is online.
    pub presence: crate::presence::Presence,
    /// Typing notices per user and room.
    pub typing: Arc<Mutex<super::ratelimit::TypingGate>>,
    /// Server shutdown: streams say `GoingAway` and end.
    pub shutdown: CancellationToken,
    /// Where the session and its followers run.
    pub tasks: crate::tasks::Tasks,
    /// Rooms per stream.
    pub max_subscriptions: usize,
    /// Streams per user.
    pub max_streams_per_user: usize,
    /// Outbound stuck deadline.
    pub stuck_timeout: Duration,
    /// How often a stream re-reads its token version.
    pub token_recheck: Duration,
}

/// Opens a stream for `who`: takes a stream slot (or `RESOURCE_EXHAUSTED`), starts the
/// session task, and returns the response stream.
pub fn open(
    deps: StreamDeps,
    who: Principal,
    inbound: impl Stream<Item = Result<proto::ClientFrame, Status>> + Send + Unpin + 'static,
) -> Result<OutStream, Status> {
    let (out, mut stream) = out::channel(deps.stuck_timeout);
    let ender = out.ender();
    let end: super::hub::EndStream = Box::new(move |why| ender(Status::unauthenticated(why)));
    let slot =
        deps.hub.open_stream(&who.user_id, deps.max_streams_per_user, end).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many open streams for this user (at most {}); close one first",
                deps.max_streams_per_user
            ))
        })?;
    stream.hold(slot);
    let tasks = deps.tasks.clone();
    let session = session::Session::new(deps, who, out);
    tasks.spawn(session.run(inbound));
    Ok(stream)
}
