//! `ChatService`: the Connect stream, sends, history (not yet implemented: every RPC answers
//! `UNIMPLEMENTED` until the messaging milestone lands).

use super::Api;
use crate::proto::chat_service_server::ChatService;

/// The `ChatService` handlers.
pub struct ChatApi(pub Api);

#[tonic::async_trait]
impl ChatService for ChatApi {}
