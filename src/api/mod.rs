//! The gRPC API: thin handlers that decode a request, call the domain, and map its error to a
//! `Status` in exactly one place ([`status`]). Cross-cutting behaviour (authentication, status
//! code mapping) lives in [`layer`] around the whole router, so every transport gets it.

pub mod admin;
pub mod attachments;
pub mod auth;
pub mod chat;
pub mod connect;
pub mod layer;
pub mod rooms;
pub mod status;

use std::sync::Arc;

use tonic::service::Routes;

use crate::auth::{Accounts, Principal};
use crate::config::Config;
use crate::proto;

/// Everything the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Accounts and tokens.
    pub accounts: Accounts,
    /// Rooms and membership.
    pub rooms: crate::rooms::Rooms,
    /// Messages.
    pub messages: crate::chat::Messages,
    /// Full-text search.
    pub search: crate::chat::search::Search,
    /// Uploads and attachments.
    pub attachments: crate::chat::attachments::Attachments,
    /// Live fan-out.
    pub hub: std::sync::Arc<crate::chat::Hub>,
    /// Who is online.
    pub presence: crate::presence::Presence,
    /// Stored notifications.
    pub notifications: crate::notifications::Notifications,
    /// Typing notices per user and room.
    pub typing: std::sync::Arc<std::sync::Mutex<crate::chat::ratelimit::TypingGate>>,
    /// Open `Listen` streams, for `SendFrame`.
    pub listeners: Arc<crate::chat::stream::Listeners>,
    /// Cancelled when the server drains.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Every task the server spawns (streams, followers, timers).
    pub tasks: crate::tasks::Tasks,
    /// What the standard health service reports.
    pub health: Health,
    /// Open connections per source (both transports).
    pub peers: Arc<crate::transport::guard::PeerLimits>,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// One online backup at a time (each copies the whole database on a thread of its own
    /// and needs its size in disk); a second one meanwhile is refused.
    pub backup_slot: Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// What each `Connect` stream needs.
    pub fn stream_deps(&self) -> crate::chat::stream::StreamDeps {
        let l = &self.config.limits;
        crate::chat::stream::StreamDeps {
            messages: self.messages.clone(),
            accounts: self.accounts.clone(),
            hub: self.hub.clone(),
            presence: self.presence.clone(),
            typing: self.typing.clone(),
            shutdown: self.shutdown.clone(),
            tasks: self.tasks.clone(),
            max_subscriptions: l.max_subscriptions_per_stream,
            max_streams_per_user: l.max_streams_per_user,
            stuck_timeout: l.stuck_stream_timeout,
            token_recheck: l.token_recheck,
        }
    }
}

/// The caller of an authenticated RPC, put into the request by [`layer::AuthLayer`].
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("missing authorization: Bearer token"))
}

/// The names the standard health service answers for: the whole server (`""`) and each of
/// edgechat's services.
pub const HEALTH_NAMES: [&str; 5] = [
    "",
    "edgechat.v1.AuthService",
    "edgechat.v1.RoomService",
    "edgechat.v1.ChatService",
    "edgechat.v1.AdminService",
];

/// The standard gRPC health service.
pub type HealthService =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

/// The health reporter, for every name at once: SERVING while the server serves, NOT_SERVING
/// while it drains or once its storage has failed (so load balancers and supervisors see it).
#[derive(Clone)]
pub struct Health(tonic_health::server::HealthReporter);

impl Health {
    /// A reporter and the service it reports through (for [`routes`]).
    pub fn new() -> (Health, HealthService) {
        let reporter = tonic_health::server::HealthReporter::new();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        (Health(reporter), tonic_health::pb::health_server::HealthServer::new(service))
    }

    /// Reports every name as serving or not.
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for name in HEALTH_NAMES {
            self.0.set_service_status(name, status).await;
        }
    }
}

/// Builds every service (edgechat's four, `health`, reflection) behind the auth and status
/// layers, ready for either transport.
pub fn routes(api: Api, health: HealthService) -> Routes {
    let limit = api.config.limits.max_message_bytes;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1 for current tools, v1alpha for older grpcurl and friends.
    let reflection_v1 = reflection().build_v1().expect("the compiled descriptor set is valid");
    let reflection_v1alpha =
        reflection().build_v1alpha().expect("the compiled descriptor set is valid");
    let routes = Routes::new(
        proto::auth_service_server::AuthServiceServer::new(auth::AuthApi(api.clone()))
            .max_decoding_message_size(limit),
    )
    .add_service(
        proto::room_service_server::RoomServiceServer::new(rooms::RoomsApi(api.clone()))
            .max_decoding_message_size(limit),
    )
    .add_service(
        proto::chat_service_server::ChatServiceServer::new(chat::ChatApi(api.clone()))
            .max_decoding_message_size(limit),
    )
    .add_service(
        proto::admin_service_server::AdminServiceServer::new(admin::AdminApi(api.clone()))
            .max_decoding_message_size(limit),
    )
    .add_service(
        // A chunk of an upload is up to 256 KiB: this service alone takes that much more.
        proto::attachment_service_server::AttachmentServiceServer::new(
            attachments::AttachmentsApi(api.clone()),
        )
        .max_decoding_message_size(limit + crate::attachments::MAX_CHUNK_BYTES),
    )
    .add_service(health)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha);
    let router = routes
        .into_axum_router()
        .route_service(connect::PATH, connect::ConnectRoute(api.clone()))
        .layer(layer::AuthLayer::new(api.accounts.clone(), api.config.tls.bind_client_cert))
        .layer(layer::StatusMapLayer)
        .layer(layer::ActivityLayer)
        // Added after the layers, so outside them: download links and the web app's files
        // need no token.
        .route_service(attachments::LINK_PATH, attachments::LinkRoute(api.attachments.clone()))
        .fallback_service(crate::web::StaticFiles);
    Routes::from(router)
}
