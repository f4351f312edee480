//! Rooms: the permission model (pure, [`permissions`]) and the room operations built on it
//! ([`service`]): create, join, leave, invite, roles, kick/ban/unban, direct rooms, updates.

pub mod permissions;
pub mod service;

pub use service::{RoomError, Rooms};
