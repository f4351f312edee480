//! The client library: one way to reach an edgechat server over HTTP/2 (`https://host:port`,
//! or `http://` for an h2c server behind a proxy) or HTTP/3 (`h3://host:port`), with a CA file
//! and an optional client certificate; typed clients that add the bearer token; and a
//! [`session`] helper that keeps a `Connect` stream alive across network failures. Tests,
//! benches and the terminal client all use it.

pub mod session;

use std::path::{Path, PathBuf};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tower::ServiceExt;

use crate::proto;

/// Boxed error of a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A transport failure under a [`GrpcChannel`]. A concrete type rather than a bare
/// `Box<dyn Error>`: async code that is generic over tonic's client bounds fails the
/// compiler's higher-ranked lifetime check with the latter.
#[derive(Debug)]
pub struct ChannelError(BoxError);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A gRPC channel over either transport: what every typed client here is built on.
pub type GrpcChannel = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    ChannelError,
>;

/// A client setup problem, naming the file or address.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A CA or certificate file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The TLS setup is bad, or the server cannot be reached.
    #[error("{0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("{}: {message}", crate::chat::stream::code_name(*.code))]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The URL is not one of the accepted forms.
    #[error("bad server URL `{0}`: use https://host:port, h3://host:port or http://host:port")]
    Url(String),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status { code: s.code(), message: s.message().to_string() }
    }
}

impl ClientError {
    /// The status code when the server refused, `UNAVAILABLE` for a transport failure (both
    /// worth retrying), `INVALID_ARGUMENT` for a local setup problem.
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::Status { code, .. } => *code,
            ClientError::Transport(_) => tonic::Code::Unavailable,
            ClientError::File { .. } | ClientError::Url(_) => tonic::Code::InvalidArgument,
        }
    }
}

/// TLS material for a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA to trust for the server certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|e| ClientError::File { path: path.display().to_string(), message: e.to_string() })
}

/// Boxes any HTTP service speaking gRPC into a [`GrpcChannel`].
pub fn boxed<S, B>(svc: S) -> GrpcChannel
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    GrpcChannel::new(
        svc.map_response(|r| r.map(tonic::body::Body::new)).map_err(|e| ChannelError(e.into())),
    )
}

/// Connects to `url`: `https://host:port` (HTTP/2 + TLS), `http://host:port` (h2c) or
/// `h3://host:port` (HTTP/3 over QUIC). HTTP/2 connects eagerly, so an unreachable server
/// or a bad certificate fails here.
pub async fn connect(url: &str, tls: &TlsFiles) -> Result<GrpcChannel, ClientError> {
    if url.starts_with("h3://") {
        return Ok(connect_h3(url, tls)?.0);
    }
    let channel =
        endpoint(url, tls)?.connect().await.map_err(|e| ClientError::Transport(describe(&e)))?;
    Ok(boxed(channel))
}

/// Like [`connect`], but connects on the first call (and again after a failure) instead of
/// now: for a client of several servers, some of which may be down.
pub fn connect_lazy(url: &str, tls: &TlsFiles) -> Result<GrpcChannel, ClientError> {
    if url.starts_with("h3://") {
        return Ok(connect_h3(url, tls)?.0);
    }
    Ok(boxed(endpoint(url, tls)?.connect_lazy()))
}

/// An HTTP/3 channel to `h3://host:port`, and its QUIC endpoint (which a test can
/// [`rebind`](crate::transport::h3::rebind_client) to simulate a network change). Connects
/// lazily: an unreachable server or a bad certificate fails on the first call.
pub fn connect_h3(
    url: &str,
    tls: &TlsFiles,
) -> Result<(GrpcChannel, quinn::Endpoint), ClientError> {
    let rest = url.strip_prefix("h3://").ok_or_else(|| ClientError::Url(url.into()))?;
    let uri: http::Uri =
        format!("https://{rest}").parse().map_err(|_| ClientError::Url(url.into()))?;
    if uri.port_u16().is_none() {
        return Err(ClientError::Url(url.into()));
    }
    let ca = tls.ca.as_deref().ok_or_else(|| ClientError::File {
        path: "(none)".into(),
        message: "HTTP/3 needs a CA file to verify the server (--ca)".into(),
    })?;
    let cert = tls.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let limits = crate::transport::h3::QuicLimits::default();
    let (channel, endpoint) =
        crate::transport::h3::h3_channel(uri, &server_name(url), ca, cert, &limits)
            .map_err(|e| ClientError::Transport(describe(e.as_ref())))?;
    Ok((boxed(channel), endpoint))
}

/// The whole chain of an error, for messages a user can act on.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Many wrappers repeat their source's text in their own; say it once.
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// The HTTP/2 endpoint for `url` with TLS configured, without connecting.
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
        cfg = cfg.domain_name(server_name(url));
        endpoint = endpoint.tls_config(cfg).map_err(|e| ClientError::Transport(describe(&e)))?;
    } else if !url.starts_with("http://") {
        return Err(ClientError::Url(url.into()));
    }
    Ok(endpoint)
}

/// The TLS server name for a URL: its host, with loopback addresses mapped to `localhost`
/// (the name the development certificate carries).
pub fn server_name(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("localhost")
    } else {
        rest.split([':', '/']).next().unwrap_or("localhost")
    };
    match host {
        "127.0.0.1" | "::1" | "" => "localhost".into(),
        h => h.into(),
    }
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
pub type Authed = InterceptedService<GrpcChannel, BearerAuth>;

/// `AuthService` client.
pub fn auth_client(
    ch: GrpcChannel,
    token: Option<&str>,
) -> proto::auth_service_client::AuthServiceClient<Authed> {
    proto::auth_service_client::AuthServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `RoomService` client.
pub fn rooms_client(
    ch: GrpcChannel,
    token: Option<&str>,
) -> proto::room_service_client::RoomServiceClient<Authed> {
    proto::room_service_client::RoomServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `ChatService` client.
pub fn chat_client(
    ch: GrpcChannel,
    token: Option<&str>,
) -> proto::chat_service_client::ChatServiceClient<Authed> {
    proto::chat_service_client::ChatServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `AdminService` client.
pub fn admin_client(
    ch: GrpcChannel,
    token: Option<&str>,
) -> proto::admin_service_client::AdminServiceClient<Authed> {
    proto::admin_service_client::AdminServiceClient::with_interceptor(ch, BearerAuth::new(token))
}

/// `AttachmentService` client.
pub fn attachments_client(
    ch: GrpcChannel,
    token: Option<&str>,
) -> proto::attachment_service_client::AttachmentServiceClient<Authed> {
    proto::attachment_service_client::AttachmentServiceClient::with_interceptor(
        ch,
        BearerAuth::new(token),
    )
}

/// Uploads `bytes` as a file named `name` and returns the attachment: declares it, then sends
/// it in chunks of at most 256 KiB from wherever the server says it stands, so a chunk whose
/// answer was lost (an `UNAVAILABLE`, a dropped connection) or that the server had no room
/// for (`RESOURCE_EXHAUSTED`) is asked about and the upload goes on from there, up to 5 times
/// in a row, 100 ms apart and doubling. Refusals (bad name, too
/// large, a hash that does not match) are returned as they are.
pub async fn upload(
    c: &mut proto::attachment_service_client::AttachmentServiceClient<Authed>,
    name: &str,
    bytes: &[u8],
) -> Result<proto::Attachment, tonic::Status> {
    use sha2::Digest;
    let sha256 = sha2::Sha256::digest(bytes).to_vec();
    let start = proto::StartUploadRequest { name: name.into(), size: bytes.len() as u64, sha256 };
    let mut up = c.start_upload(start).await?.into_inner();
    let (mut failures, mut pause) = (0, std::time::Duration::from_millis(100));
    loop {
        if let Some(a) = up.attachment {
            return Ok(a);
        }
        let from = (up.received as usize).min(bytes.len());
        let to = (from + crate::attachments::MAX_CHUNK_BYTES).min(bytes.len());
        let chunk = proto::UploadChunkRequest {
            upload_id: up.upload_id.clone(),
            offset: from as u64,
            data: bytes[from..to].to_vec(),
        };
        match c.upload_chunk(chunk).await {
            Ok(r) => {
                up = r.into_inner();
                failures = 0;
            }
            // UNAVAILABLE: lost on the way; RESOURCE_EXHAUSTED on a chunk: the server stores as
            // many as it takes at once.
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                ) && failures < 5 =>
            {
                failures += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
                let ask = proto::GetUploadRequest { upload_id: up.upload_id.clone() };
                if let Ok(r) = c.get_upload(ask).await {
                    up = r.into_inner();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Downloads attachment `id` whole (`Download`, resumed from where a broken stream stopped,
/// up to 5 times in a row).
pub async fn download(
    c: &mut proto::attachment_service_client::AttachmentServiceClient<Authed>,
    id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut out = Vec::new();
    let mut failures = 0;
    loop {
        let ask = proto::DownloadRequest { attachment_id: id.into(), offset: out.len() as u64 };
        let broken = match c.download(ask).await {
            Ok(r) => {
                let mut chunks = r.into_inner();
                loop {
                    match chunks.message().await {
                        Ok(Some(chunk)) if chunk.offset == out.len() as u64 => {
                            out.extend_from_slice(&chunk.data);
                        }
                        Ok(Some(chunk)) => {
                            return Err(tonic::Status::data_loss(format!(
                                "chunk at offset {}, expected {}",
                                chunk.offset,
                                out.len()
                            )));
                        }
                        Ok(None) => return Ok(out),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        if broken.code() != tonic::Code::Unavailable || failures >= 5 {
            return Err(broken);
        }
        failures += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100 << failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(server_name("https://127.0.0.1:7443"), "localhost");
        assert_eq!(server_name("h3://[::1]:7443"), "localhost");
        assert_eq!(server_name("https://chat.example:443/"), "chat.example");
        assert_eq!(server_name("h3://chat.example"), "chat.example");
    }
}
