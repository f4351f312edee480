//! `ChatService`: the `Connect` stream and the unary message RPCs, thin over [`crate::chat`].

use tonic::{Request, Response, Status, Streaming};

use super::{Api, principal};
use crate::chat::stream;
use crate::clock::now_ms;
use crate::proto::{self, chat_service_server::ChatService};

/// The `ChatService` handlers.
pub struct ChatApi(pub Api);

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn connect(
        &self,
        req: Request<Streaming<proto::ClientFrame>>,
    ) -> Result<Response<tonic::codegen::BoxStream<proto::ServerFrame>>, Status> {
        let who = principal(&req)?;
        // Not routed (api::connect serves Connect with its own codec); kept whole so the
        // generated service stays a complete implementation.
        let out = stream::open(self.0.stream_deps(), who, req.into_inner())?;
        let out = futures_util::StreamExt::map(out, |f| f.map(stream::OutFrame::into_frame));
        Ok(Response::new(Box::pin(out)))
    }

    async fn listen(
        &self,
        req: Request<proto::ListenRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<proto::ServerFrame>>, Status> {
        use futures_util::StreamExt;
        use proto::{client_frame, server_frame};
        let who = principal(&req)?;
        let subscriptions = req.into_inner().subscriptions;
        let (stream_id, inbound) = self.0.listeners.register(&who.user_id);
        // The request's subscriptions are the session's first frames, as on Connect.
        let first = subscriptions
            .into_iter()
            .map(|s| Ok(proto::ClientFrame { kind: Some(client_frame::Kind::Subscribe(s)) }));
        let inbound = futures_util::stream::iter(first).chain(inbound);
        let out = stream::open(self.0.stream_deps(), who, inbound)?;
        let listening = proto::ServerFrame {
            kind: Some(server_frame::Kind::Listening(proto::Listening { stream_id })),
        };
        let out = futures_util::stream::once(async { Ok(listening) })
            .chain(out.map(|f| f.map(stream::OutFrame::into_frame)));
        Ok(Response::new(Box::pin(out)))
    }

    async fn send_frame(
        &self,
        req: Request<proto::SendFrameRequest>,
    ) -> Result<Response<proto::SendFrameResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let frame = r.frame.ok_or_else(|| {
            Status::invalid_argument("frame is required: the ClientFrame to apply to the stream")
        })?;
        let wait = self.0.config.limits.stuck_stream_timeout;
        self.0.listeners.deliver(&who.user_id, &r.stream_id, frame, wait).await?;
        Ok(Response::new(proto::SendFrameResponse {}))
    }

    async fn send_message(
        &self,
        req: Request<proto::SendMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        // Without a client_message_id the send is not idempotent; give it a fresh one.
        let cmid = if r.client_message_id.is_empty() {
            crate::store::new_id('m')
        } else {
            r.client_message_id
        };
        let m = self
            .0
            .messages
            .submit_send(
                &who,
                &proto::Send {
                    room_id: r.room_id,
                    client_message_id: cmid,
                    text: r.text,
                    reply_to_seq: r.reply_to_seq,
                    attachment_ids: r.attachment_ids,
                },
                now_ms(),
            )
            .await?
            .await?;
        Ok(Response::new(m))
    }

    async fn history(
        &self,
        req: Request<proto::HistoryRequest>,
    ) -> Result<Response<proto::HistoryResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0
            .messages
            .await_seq(&r.room_id, r.after_seq.max(r.before_seq.saturating_sub(1)))
            .await?;
        Ok(Response::new(self.0.messages.history(&who, &r)?))
    }

    async fn edit_message(
        &self,
        req: Request<proto::EditMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(self.0.messages.edit(&who, &r.room_id, r.seq, &r.text, now_ms()).await?))
    }

    async fn delete_message(
        &self,
        req: Request<proto::DeleteMessageRequest>,
    ) -> Result<Response<proto::DeleteMessageResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.messages.delete(&who, &r.room_id, r.seq, now_ms()).await?;
        Ok(Response::new(proto::DeleteMessageResponse {}))
    }

    async fn mark_read(
        &self,
        req: Request<proto::MarkReadRequest>,
    ) -> Result<Response<proto::MarkReadResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.messages.mark_read(&who, &r.room_id, r.seq, now_ms()).await?;
        Ok(Response::new(proto::MarkReadResponse {}))
    }

    async fn list_notifications(
        &self,
        req: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let notifications = self.0.notifications.list(&who, r.after_id, r.limit)?;
        Ok(Response::new(proto::ListNotificationsResponse { notifications }))
    }

    async fn mark_notifications_read(
        &self,
        req: Request<proto::MarkNotificationsReadRequest>,
    ) -> Result<Response<proto::MarkNotificationsReadResponse>, Status> {
        let who = principal(&req)?;
        self.0.notifications.mark_read(&who, req.get_ref().up_to_id, now_ms()).await?;
        Ok(Response::new(proto::MarkNotificationsReadResponse {}))
    }

    async fn add_reaction(
        &self,
        req: Request<proto::AddReactionRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let at = (r.room_id.as_str(), r.seq);
        Ok(Response::new(self.0.messages.react(&who, at, &r.emoji, true, now_ms()).await?))
    }

    async fn remove_reaction(
        &self,
        req: Request<proto::RemoveReactionRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let at = (r.room_id.as_str(), r.seq);
        Ok(Response::new(self.0.messages.react(&who, at, &r.emoji, false, now_ms()).await?))
    }

    async fn pin_message(
        &self,
        req: Request<proto::PinMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(self.0.messages.pin(&who, (&r.room_id, r.seq), true, now_ms()).await?))
    }

    async fn unpin_message(
        &self,
        req: Request<proto::UnpinMessageRequest>,
    ) -> Result<Response<proto::Message>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        Ok(Response::new(self.0.messages.pin(&who, (&r.room_id, r.seq), false, now_ms()).await?))
    }

    async fn list_pins(
        &self,
        req: Request<proto::ListPinsRequest>,
    ) -> Result<Response<proto::ListPinsResponse>, Status> {
        let who = principal(&req)?;
        let messages = self.0.messages.pins(&who, &req.get_ref().room_id)?;
        Ok(Response::new(proto::ListPinsResponse { messages }))
    }

    async fn search(
        &self,
        req: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let who = principal(&req)?;
        // Reads every room's index: off the async threads.
        let search = self.0.search.clone();
        let r = req.into_inner();
        let found = tokio::task::spawn_blocking(move || search.search(&who, &r, now_ms()))
            .await
            .map_err(|e| Status::internal(format!("search failed: {e}")))??;
        Ok(Response::new(found))
    }

    async fn get_presence(
        &self,
        req: Request<proto::GetPresenceRequest>,
    ) -> Result<Response<proto::GetPresenceResponse>, Status> {
        let who = principal(&req)?;
        let ids = &req.get_ref().user_ids;
        if ids.len() > 500 {
            return Err(Status::invalid_argument("at most 500 user_ids per call"));
        }
        let tx = self.0.accounts.store().read().map_err(|e| super::status::store_status(&e))?;
        let mut presences = Vec::with_capacity(ids.len());
        for id in ids {
            let known =
                crate::store::users::user(&tx, id).map_err(|e| super::status::store_status(&e))?;
            let visible = *id == who.user_id
                || crate::presence::share_a_room(&tx, &who.user_id, id)
                    .map_err(|e| super::status::store_status(&e))?;
            let Some(user) = known.filter(|_| visible) else {
                return Err(Status::not_found(format!(
                    "no user `{id}` that shares a room with you"
                )));
            };
            let (status, last_seen_ms) = self.0.presence.of(&user.id, user.last_seen_ms);
            presences.push(proto::Presence {
                user_id: user.id,
                status: status as i32,
                last_seen_ms,
            });
        }
        Ok(Response::new(proto::GetPresenceResponse { presences }))
    }
}
