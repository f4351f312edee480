//! `AuthService`: register, login, refresh, logout, whoami, user lookup.

use tonic::{Request, Response, Status};

use super::{Api, principal};
use crate::auth::accounts::{Issued, user_to_proto};
use crate::clock::now_ms;
use crate::proto::{self, auth_service_server::AuthService};

/// The `AuthService` handlers.
pub struct AuthApi(pub Api);

fn auth_response(i: Issued) -> Response<proto::AuthResponse> {
    Response::new(proto::AuthResponse {
        access_token: i.access_token,
        refresh_token: i.refresh_token,
        access_expires_at_ms: i.access_expires_at_ms,
        user: Some(user_to_proto(&i.user)),
    })
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        req: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::AuthResponse>, Status> {
        let r = req.into_inner();
        let (name, pw, display) = (&r.username, &r.password, &r.display_name);
        let issued = self.0.accounts.register(name, pw, display, &r.invite_code, now_ms()).await?;
        Ok(auth_response(issued))
    }

    async fn login(
        &self,
        req: Request<proto::LoginRequest>,
    ) -> Result<Response<proto::AuthResponse>, Status> {
        let r = req.into_inner();
        Ok(auth_response(self.0.accounts.login(&r.username, &r.password, now_ms()).await?))
    }

    async fn refresh(
        &self,
        req: Request<proto::RefreshRequest>,
    ) -> Result<Response<proto::AuthResponse>, Status> {
        let r = req.into_inner();
        Ok(auth_response(self.0.accounts.refresh(&r.refresh_token, now_ms()).await?))
    }

    async fn logout(
        &self,
        req: Request<proto::LogoutRequest>,
    ) -> Result<Response<proto::LogoutResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.accounts.logout(&who, &r.refresh_token, r.all_devices).await?;
        Ok(Response::new(proto::LogoutResponse {}))
    }

    async fn who_am_i(
        &self,
        req: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::User>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(user_to_proto(&self.0.accounts.user(&who.user_id)?)))
    }

    async fn lookup_users(
        &self,
        req: Request<proto::LookupUsersRequest>,
    ) -> Result<Response<proto::LookupUsersResponse>, Status> {
        principal(&req)?;
        let r = req.into_inner();
        let found = self.0.accounts.lookup(&r.usernames, &r.user_ids)?;
        Ok(Response::new(proto::LookupUsersResponse {
            users: found.iter().map(user_to_proto).collect(),
        }))
    }
}
