//! `RoomService`: rooms, membership and permissions (not yet implemented: every RPC answers
//! `UNIMPLEMENTED` until the rooms milestone lands).

use super::Api;
use crate::proto::room_service_server::RoomService;

/// The `RoomService` handlers.
pub struct RoomsApi(pub Api);

#[tonic::async_trait]
impl RoomService for RoomsApi {}
