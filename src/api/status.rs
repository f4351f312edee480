//! The one place domain errors become gRPC statuses (API.md "Status codes").

use tonic::Status;

use crate::auth::AuthError;
use crate::chat::ChatError;
use crate::rooms::RoomError;
use crate::rooms::permissions::Denied;
use crate::store::StoreError;

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::InvalidArgument(m) => Status::invalid_argument(m),
            AuthError::Unauthenticated(m) => Status::unauthenticated(m),
            AuthError::PermissionDenied(m) => Status::permission_denied(m),
            AuthError::NotFound(m) => Status::not_found(m),
            AuthError::AlreadyExists(m) => Status::already_exists(m),
            AuthError::ResourceExhausted(m) => Status::resource_exhausted(m),
            AuthError::Store(e) => store_status(&e),
        }
    }
}

/// A storage failure: logged here, reported as `UNAVAILABLE` (the client may retry; nothing
/// was acknowledged).
pub fn store_status(e: &StoreError) -> Status {
    if let StoreError::LogUnavailable(_) = e {
        // Not this node's storage: NATS is away for a while, and says so in its own logs.
        tracing::warn!(error = %e, "a change was not taken by the cluster's log");
        return Status::unavailable(format!(
            "{e}; nothing was stored, retry (with the same client_message_id for sends)"
        ));
    }
    tracing::error!(error = %e, "storage failure");
    match e {
        StoreError::WriterGone => Status::unavailable("server is shutting down"),
        other => Status::unavailable(format!("storage failure: {other}")),
    }
}

impl From<Denied> for Status {
    fn from(d: Denied) -> Status {
        match d {
            Denied::NotFound(m) => Status::not_found(m),
            Denied::PermissionDenied(m) => Status::permission_denied(m),
            Denied::FailedPrecondition(m) => Status::failed_precondition(m),
            Denied::AlreadyExists(m) => Status::already_exists(m),
        }
    }
}

impl From<RoomError> for Status {
    fn from(e: RoomError) -> Status {
        room_status(&e)
    }
}

/// The status of a room error (by reference: stream errors are reported, not consumed).
pub fn room_status(e: &RoomError) -> Status {
    match e {
        RoomError::Denied(d) => (*d).into(),
        RoomError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        RoomError::NotFound(m) => Status::not_found(m.clone()),
        RoomError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
        RoomError::Unauthenticated(m) => Status::unauthenticated(m.clone()),
        RoomError::ResourceExhausted(m) => Status::resource_exhausted(m.clone()),
        RoomError::Store(e) => store_status(e),
    }
}

impl From<ChatError> for Status {
    fn from(e: ChatError) -> Status {
        chat_status(&e)
    }
}

/// The status of a chat error.
pub fn chat_status(e: &ChatError) -> Status {
    match e {
        ChatError::Room(r) => room_status(r),
        ChatError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        ChatError::NotFound(m) => Status::not_found(m.clone()),
        ChatError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
        ChatError::ResourceExhausted(m) => Status::resource_exhausted(m.clone()),
    }
}

impl From<crate::notifications::NotificationError> for Status {
    fn from(e: crate::notifications::NotificationError) -> Status {
        match e {
            crate::notifications::NotificationError::InvalidArgument(m) => {
                Status::invalid_argument(m)
            }
            crate::notifications::NotificationError::ResourceExhausted(m) => {
                Status::resource_exhausted(m)
            }
            crate::notifications::NotificationError::Unauthenticated(m) => {
                Status::unauthenticated(m)
            }
            crate::notifications::NotificationError::Store(e) => store_status(&e),
        }
    }
}
