//! HTTP/3 (QUIC) transport: quinn endpoint and rustls config, a serve loop that puts a
//! [`PeerInfo`] into every request, and an HTTP/3 client channel for the generated clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use h3_util::server_body::{H3IncomingServer, send_h3_server_body};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Bytes;
use tonic::service::Routes;
use tower::ServiceExt;

use super::guard::{Activity, IdleRule, Verdict};
use super::tls::{self, TlsError};
use super::{ConnLimits, PeerInfo};
use crate::config::TlsConfig;

/// ALPN for HTTP/3.
pub const ALPN_H3: &[u8] = b"h3";

pub use crate::config::QuicLimits;

/// Transport parameters shared by server and client.
pub fn transport_config(lim: &QuicLimits) -> Result<quinn::TransportConfig, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(lim.max_bidi_streams))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(lim.max_uni_streams))
        .stream_receive_window(quinn::VarInt::from_u32(lim.stream_receive_window))
        .receive_window(quinn::VarInt::from_u32(lim.receive_window))
        .send_window(lim.send_window)
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(lim.idle_timeout)
                .map_err(|e| TlsError::Rustls(format!("idle timeout: {e}")))?,
        ))
        .keep_alive_interval(Some(lim.keep_alive));
    Ok(t)
}

/// The QUIC server config: TLS 1.3 only, ALPN `h3`, ring, same client-cert policy
/// (off/optional/required) as the TCP listener, 0-RTT off, migration on.
pub fn quic_server_config(
    tls_cfg: &TlsConfig,
    lim: &QuicLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut rustls_cfg =
        tls::server_config_with_versions(tls_cfg, &[ALPN_H3], &[&rustls::version::TLS13])?;
    // 0-RTT off (quinn accepts 0 or u32::MAX here; 0 is rustls' default).
    rustls_cfg.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(rustls_cfg)
        .map_err(|e| TlsError::Rustls(format!("QUIC TLS config: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config(lim)?));
    cfg.migration(true);
    Ok(cfg)
}

/// Binds the UDP endpoint on the TCP listener's address (same port number).
pub fn bind_endpoint(
    addr: SocketAddr,
    cfg: quinn::ServerConfig,
) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(cfg, addr)
}

/// Subject CN of the verified client certificate of a QUIC connection, if any.
pub fn client_cert_name(conn: &quinn::Connection) -> Option<String> {
    let any = conn.peer_identity()?;
    let certs = any.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    tls::cert_common_name(certs.first()?)
}

fn peer_info(
    conn: &quinn::Connection,
    client_cert_name: &Option<String>,
    activity: &Arc<Activity>,
) -> PeerInfo {
    PeerInfo {
        // Read per request: the address changes when the client migrates.
        remote_addr: Some(conn.remote_address()),
        client_cert_name: client_cert_name.clone(),
        transport: "h3",
        activity: Some(activity.clone()),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Ends a response body after its trailers. tonic's server body, after a handler's stream
/// yields `Err(status)`, returns the status as trailers and then only *reports*
/// `is_end_stream()`; h3-util's `send_h3_server_body` ignores that and polls again, so
/// the stream is never finished while the handler keeps its stream open, and the client
/// (h3 waits for FIN after trailers) hangs. hyper (HTTP/2) checks `is_end_stream`.
pub struct EndAfterTrailers<B> {
    inner: B,
    done: bool,
}

impl<B> EndAfterTrailers<B> {
    /// Wraps a response body.
    pub fn new(inner: B) -> Self {
        Self { inner, done: false }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for EndAfterTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        if self.done || self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) if !f.is_trailers() => {}
            _ => self.done = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether to handshake now (false: answer with a stateless Retry first).
fn admit(incoming: &quinn::Incoming, handshaking: &AtomicUsize, lim: &QuicLimits) -> bool {
    incoming.remote_address_validated()
        || !incoming.may_retry()
        || handshaking.load(Ordering::Relaxed) < lim.retry_above_handshakes
}

async fn handshake(
    incoming: quinn::Incoming,
    timeout: Duration,
    handshaking: &AtomicUsize,
) -> Option<quinn::Connection> {
    handshaking.fetch_add(1, Ordering::Relaxed);
    let r = tokio::time::timeout(timeout, incoming).await;
    handshaking.fetch_sub(1, Ordering::Relaxed);
    match r {
        Ok(Ok(conn)) => Some(conn),
        Ok(Err(e)) => {
            tracing::debug!("QUIC handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server: our own accept loop over h3 + h3-util's body adapters (tonic-h3's H3Router gives
// handlers no peer address or certificate, sets no limits and does not drain on shutdown).
// ---------------------------------------------------------------------------------------

/// Serves `routes` over HTTP/3 until `shutdown` is cancelled: then stops accepting, sends
/// GOAWAY on every connection and lets in-flight requests finish (the app sends
/// `GoingAway` on its Connect streams). Returns when accepting stopped; call
/// `endpoint.wait_idle()` afterwards to wait for connections to close.
pub async fn serve_h3(
    endpoint: quinn::Endpoint,
    routes: Routes,
    lim: QuicLimits,
    limits: ConnLimits,
    shutdown: CancellationToken,
    tasks: crate::tasks::Tasks,
) {
    let routes = routes.prepare();
    let lim = Arc::new(lim);
    let handshaking = Arc::new(AtomicUsize::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(lim.max_connections));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            () = shutdown.cancelled() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let (peers, rule) = (limits.peers.clone(), limits.idle);
        if !admit(&incoming, &handshaking, &lim) {
            let _ = incoming.retry();
            continue;
        }
        let (routes, lim, shutdown, handshaking) =
            (routes.clone(), lim.clone(), shutdown.clone(), handshaking.clone());
        tasks.spawn(async move {
            // The connection slot is held for the connection's whole life. (Dropped at the
            // drain deadline, the task's request set aborts the requests still running.)
            let _slot = slot;
            if let Some(conn) = handshake(incoming, lim.handshake_timeout, &handshaking).await {
                // One source's TCP and QUIC connections count together. Taken only once the
                // handshake proved the address (a spoofed Initial cannot use up a victim's
                // share).
                let Some(_peer) = peers.try_take(conn.remote_address().ip()) else {
                    tracing::debug!(peer = %conn.remote_address(), "refused: too many connections");
                    conn.close(quinn::VarInt::from_u32(0x100), b"too many connections");
                    return;
                };
                serve_connection(conn, routes, &lim, rule, shutdown).await;
            }
        });
    }
    // Refuse new connections from here on; existing ones keep going.
    endpoint.set_server_config(None);
}

async fn serve_connection(
    conn: quinn::Connection,
    routes: Routes,
    lim: &QuicLimits,
    rule: IdleRule,
    shutdown: CancellationToken,
) {
    let cert_name = client_cert_name(&conn);
    let activity = Activity::new();
    let idle = tokio::time::sleep(rule.auth_timeout);
    tokio::pin!(idle);
    let h3_conn = h3::server::builder()
        .max_field_section_size(lim.max_header_bytes)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3_conn = match h3_conn {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("h3 setup failed: {e}");
            return;
        }
    };
    // Request tasks of this connection; dropping the set aborts whatever still runs.
    let mut requests = JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            r = h3_conn.accept() => match r {
                Ok(Some(resolver)) => {
                    let info = peer_info(&conn, &cert_name, &activity);
                    let routes = routes.clone();
                    let header_timeout = lim.handshake_timeout;
                    requests.spawn(async move {
                        if let Err(e) = serve_request(resolver, routes, info, header_timeout).await {
                            tracing::debug!("h3 request: {e}");
                        }
                    });
                }
                // GOAWAY exchanged and every request finished.
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!("h3 connection: {e}");
                    }
                    break;
                }
            },
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                // GOAWAY: no new requests; accept() returns None once in-flight ones end.
                let _ = h3_conn.shutdown(0).await;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            () = &mut idle => match rule.check(activity.state(), std::time::Instant::now()) {
                Verdict::Close(why) => {
                    tracing::debug!(peer = %conn.remote_address(), why, "closing connection");
                    // H3_NO_ERROR: nothing was wrong with what the client sent.
                    conn.close(quinn::VarInt::from_u32(0x100), why.as_bytes());
                    break;
                }
                Verdict::CheckAt(at) => idle.as_mut().reset(tokio::time::Instant::from_std(at)),
            },
        }
    }
    requests.abort_all();
}

async fn serve_request(
    resolver: h3::server::RequestResolver<h3_quinn::Connection, Bytes>,
    routes: Routes,
    info: PeerInfo,
    header_timeout: Duration,
) -> Result<(), BoxError> {
    let (req, stream) = tokio::time::timeout(header_timeout, resolver.resolve_request())
        .await
        .map_err(|_| "request headers timed out")??;
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.extensions.insert(info);
    let req = http::Request::from_parts(parts, H3IncomingServer::new(recv));
    let resp = routes.oneshot(req).await.unwrap_or_else(|e: Infallible| match e {});
    let (parts, body) = resp.into_parts();
    send.send_response(http::Response::from_parts(parts, ())).await?;
    // h3-util's sender resets the stream if this task is aborted or the body fails.
    send_h3_server_body::<_, h3_quinn::BidiStream<Bytes>>(&mut send, EndAfterTrailers::new(body))
        .await
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// An HTTP/3 channel for the generated clients. Clone (a `tower::buffer::Buffer` handle);
/// connects lazily; one QUIC connection, re-established when its driver ends.
pub type H3Channel = tonic_h3::H3Channel<tonic_h3::quinn::H3QuinnConnector>;

/// Builds an HTTP/3 channel to `uri` (`https://host:port`), verifying the server as
/// `server_name` against `ca`, presenting `client_cert` (chain, key) if given. Returns the
/// quinn endpoint too (for `rebind`). Must be called inside a Tokio runtime.
pub fn h3_channel(
    uri: http::Uri,
    server_name: &str,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
    lim: &QuicLimits,
) -> Result<(H3Channel, quinn::Endpoint), BoxError> {
    let roots = tls::load_roots(ca)?;
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls_cfg = match client_cert {
        Some((chain, key)) => {
            builder.with_client_auth_cert(tls::load_certs(chain)?, tls::load_key(key)?)?
        }
        None => builder.with_no_client_auth(),
    };
    tls_cfg.alpn_protocols = vec![ALPN_H3.to_vec()];
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls_cfg)?));
    client_cfg.transport_config(Arc::new(transport_config(lim)?));

    let bind: SocketAddr = if uri.host().is_some_and(|h| h.starts_with('[')) {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(client_cfg);
    let connector = tonic_h3::quinn::H3QuinnConnector::new(
        uri.clone(),
        server_name.to_string(),
        endpoint.clone(),
    );
    Ok((tonic_h3::H3Channel::new(connector, uri, None), endpoint))
}

/// Simulates a network change: moves the client endpoint (all its connections) to a
/// fresh UDP socket; the server sees the new address after the next packet (migration).
pub fn rebind_client(endpoint: &quinn::Endpoint) -> std::io::Result<SocketAddr> {
    let old = endpoint.local_addr()?;
    let any: SocketAddr =
        if old.is_ipv6() { "[::]:0".parse().unwrap() } else { "0.0.0.0:0".parse().unwrap() };
    endpoint.rebind(std::net::UdpSocket::bind(any)?)?;
    endpoint.local_addr()
}
