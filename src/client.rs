//! The client library: channels to an edgechat server over HTTP/2 + TLS, and an interceptor
//! that adds the bearer token. Tests, benches and the terminal client use it.

use std::path::Path;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto;

/// A client setup problem, naming the file or address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A CA or certificate file could not be read.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The URL or TLS setup is bad, or the server cannot be reached.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// The URL is not `https://host:port` or `http://host:port`.
    #[error("bad server URL `{0}`: use https://host:port")]
    Url(String),
}

/// TLS material for a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA to trust for the server certificate.
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|source| ClientError::File { path: path.display().to_string(), source })
}

/// Connects to `url` (`https://host:port`, or `http://` for an h2c server) over HTTP/2.
pub async fn connect(url: &str, tls: &TlsFiles) -> Result<Channel, ClientError> {
    let endpoint = endpoint(url, tls)?;
    Ok(endpoint.connect().await?)
}

/// The endpoint for `url` with TLS configured, without connecting.
pub fn endpoint(url: &str, tls: &TlsFiles) -> Result<Endpoint, ClientError> {
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|_| ClientError::Url(url.into()))?;
    if url.starts_with("https://") {
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &tls.client_cert {
            cfg = cfg.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        let host =
            url.trim_start_matches("https://").split([':', '/']).next().unwrap_or("localhost");
        let domain = if host == "127.0.0.1" || host == "[::1]" { "localhost" } else { host };
        endpoint = endpoint.tls_config(cfg.domain_name(domain))?;
    } else if !url.starts_with("http://") {
        return Err(ClientError::Url(url.into()));
    }
    Ok(endpoint)
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerAuth {
    /// With a token (`None` sends no header).
    pub fn new(token: Option<&str>) -> Self {
        BearerAuth(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the bearer token attached.
pub type Authed = InterceptedService<Channel, BearerAuth>;

/// Typed clients over one channel.
pub fn auth_client(
    ch: Channel,
    token: Option<&str>,
) -> proto::auth_service_client::AuthServiceClient<Authed> {
    proto::auth_service_client::AuthServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `RoomService` client.
pub fn rooms_client(
    ch: Channel,
    token: Option<&str>,
) -> proto::room_service_client::RoomServiceClient<Authed> {
    proto::room_service_client::RoomServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `ChatService` client.
pub fn chat_client(
    ch: Channel,
    token: Option<&str>,
) -> proto::chat_service_client::ChatServiceClient<Authed> {
    proto::chat_service_client::ChatServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `AdminService` client.
pub fn admin_client(
    ch: Channel,
    token: Option<&str>,
) -> proto::admin_service_client::AdminServiceClient<Authed> {
    proto::admin_service_client::AdminServiceClient::with_interceptor(ch, BearerAuth::new(token))
}
