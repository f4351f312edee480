//! `AdminService`: user management and online backup, for global admins.

use tonic::{Request, Response, Status};

use super::{Api, principal};
use crate::auth::Principal;
use crate::auth::accounts::{role_from_proto, user_to_proto};
use crate::clock::now_ms;
use crate::config::Role;
use crate::proto::{self, admin_service_server::AdminService};

/// The `AdminService` handlers.
pub struct AdminApi(pub Api);

fn admin<T>(req: &Request<T>) -> Result<Principal, Status> {
    let who = principal(req)?;
    if who.role != Role::Admin {
        return Err(Status::permission_denied("only global admins may use AdminService"));
    }
    Ok(who)
}

fn role_arg(v: i32) -> Result<Role, Status> {
    role_from_proto(v)
        .ok_or_else(|| Status::invalid_argument(format!("role {v} is not GUEST, MEMBER or ADMIN")))
}

/// Bytes per `BackupChunk` (well under every message-size limit).
const BACKUP_CHUNK: usize = 32 * 1024;

/// A file deleted when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn user_id_arg(id: &str) -> Result<&str, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("user_id is empty"));
    }
    Ok(id)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_users(
        &self,
        req: Request<proto::ListUsersRequest>,
    ) -> Result<Response<proto::ListUsersResponse>, Status> {
        admin(&req)?;
        let users = self.0.accounts.list_users()?.iter().map(user_to_proto).collect();
        Ok(Response::new(proto::ListUsersResponse { users }))
    }

    async fn set_user_role(
        &self,
        req: Request<proto::SetUserRoleRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        let role = role_arg(r.role)?;
        // The change ends the user's streams from inside its commit (see Accounts::set_role).
        let user = user_id_arg(&r.user_id)?;
        let u = self.0.accounts.set_role(&who.user_id, user, role, now_ms()).await?;
        Ok(Response::new(user_to_proto(&u)))
    }

    async fn disable_user(
        &self,
        req: Request<proto::DisableUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        if r.user_id == who.user_id && r.disabled {
            return Err(Status::failed_precondition("an admin cannot disable themselves"));
        }
        let user = user_id_arg(&r.user_id)?;
        let u = self.0.accounts.set_disabled(&who.user_id, user, r.disabled, now_ms()).await?;
        Ok(Response::new(user_to_proto(&u)))
    }

    /// A consistent snapshot of the database (one read transaction; the server keeps serving)
    /// written to a temporary file, then streamed in chunks; the file is removed when the
    /// stream ends or the client goes away.
    async fn backup(
        &self,
        req: Request<proto::BackupRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<proto::BackupChunk>>, Status> {
        admin(&req)?;
        let Ok(slot) = self.0.backup_slot.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "another backup is running; try again when it has finished",
            ));
        };
        let store = self.0.messages.store().clone();
        let dir = self.0.config.data_dir.clone();
        let file = crate::tasks::background(move || {
            let _slot = slot;
            let out = crate::files::temp_path(&dir.join("backup.redb"));
            store.snapshot_to(&out).map(|_| TempFile(out))
        })
        .await
        .ok_or_else(|| Status::internal("backup thread failed"))?
        .map_err(|e| Status::unavailable(format!("backup failed: {e}")))?;
        let reader = tokio::fs::File::open(&file.0)
            .await
            .map_err(|e| Status::unavailable(format!("backup failed: {e}")))?;
        let chunks = tokio_util::io::ReaderStream::with_capacity(reader, BACKUP_CHUNK);
        let stream = futures_util::StreamExt::map(chunks, move |r| {
            // The temp file lives as long as the stream.
            let _file = &file;
            r.map(|data| proto::BackupChunk { data: data.to_vec() })
                .map_err(|e| Status::unavailable(format!("backup read failed: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_user(
        &self,
        req: Request<proto::CreateUserRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        let role = role_arg(r.role)?;
        let u = self
            .0
            .accounts
            .create_user_as(&who, &r.username, &r.password, &r.display_name, role, now_ms())
            .await?;
        Ok(Response::new(user_to_proto(&u)))
    }

    async fn list_audit(
        &self,
        req: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        admin(&req)?;
        let r = req.into_inner();
        let tx = self.0.messages.store().read().map_err(|e| super::status::store_status(&e))?;
        let page = crate::audit::page(r.limit);
        let entries = crate::store::audit::after(&tx, r.after_id, page)
            .map_err(|e| super::status::store_status(&e))?;
        Ok(Response::new(proto::ListAuditResponse { entries }))
    }

    async fn create_invite_code(
        &self,
        req: Request<proto::CreateInviteCodeRequest>,
    ) -> Result<Response<proto::InviteCode>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        let code = self.0.accounts.create_invite(&who, r.valid_for_secs, &r.note, now_ms()).await?;
        Ok(Response::new(code))
    }
}
