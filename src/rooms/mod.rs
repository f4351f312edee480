//! Rooms: the permission model (pure), and later membership and room events.

pub mod permissions;
