//! Transports: the TCP listener (HTTP/2 over TLS, or h2c behind an explicit flag) and the TLS
//! configuration shared with HTTP/3. Connections carry a [`PeerInfo`] into every request so
//! handlers and layers see the peer address and client certificate the same way on every
//! transport.

pub mod guard;
pub mod h3;
pub mod tcp;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

/// What a request knows about its connection, put into request extensions by the transport.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Remote address.
    pub remote_addr: Option<SocketAddr>,
    /// Subject common name of the verified client certificate, if one was presented.
    pub client_cert_name: Option<String>,
    /// Which transport: `h2`, `h2c` or `h3`.
    pub transport: &'static str,
    /// What the connection has done (open requests, authenticated), for its idle rule.
    pub activity: Option<Arc<guard::Activity>>,
}

/// What both transports enforce per connection: the per-source cap (shared: one source's
/// TCP and QUIC connections count together) and the idle rule.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections per source.
    pub peers: Arc<guard::PeerLimits>,
    /// When a connection that does nothing is closed.
    pub idle: guard::IdleRule,
}
