//! The TCP listener: accepts with a large backlog, bounds open connections with a semaphore,
//! runs each TLS handshake in its own task under a timeout (a slow or silent client never
//! stalls accepts), and hands finished connections to tonic's HTTP/2 server.
//!
//! hyper runs each connection in a task of its own that we do not track; [`Conn`] wraps the
//! connection's I/O and fails its reads once the server's drain deadline has passed
//! ([`Tasks::stopping`]), which ends that task: no client can hold shutdown (or the
//! database) past the deadline, whatever it does with its flow-control window.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::guard::{Activity, IdleRule, PeerSlot, Verdict};
use super::{ConnLimits, PeerInfo};
use crate::tasks::Tasks;

/// Pending accepted connections; std's default of 128 drops connections when a thousand
/// clients connect at once.
const BACKLOG: i32 = 4096;
/// Handshaken connections waiting for the HTTP/2 server to pick them up.
const READY_QUEUE: usize = 256;

/// Binds a TCP listener with [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What an accepted connection holds for its whole life: its place under the global cap and
/// under its source's.
struct Held {
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

/// One accepted connection (TLS or plain).
pub struct Conn<S> {
    io: S,
    info: PeerInfo,
    /// Ready once the drain deadline has passed: reads fail, hyper drops the connection.
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: IdleTimer,
    _held: Held,
}

/// Closes a connection that breaks the idle rule: its reads fail, hyper drops it.
struct IdleTimer {
    rule: IdleRule,
    activity: Arc<Activity>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(rule: IdleRule, activity: Arc<Activity>) -> IdleTimer {
        let first = tokio::time::Instant::now() + rule.auth_timeout;
        IdleTimer { rule, activity, sleep: Box::pin(tokio::time::sleep_until(first)) }
    }

    /// Why to close now, if the rule says so; otherwise arms the timer for the next check.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        while self.sleep.as_mut().poll(cx).is_ready() {
            match self.rule.check(self.activity.state(), std::time::Instant::now()) {
                Verdict::Close(why) => return Some(why),
                Verdict::CheckAt(at) => {
                    self.sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                }
            }
        }
        None
    }
}

impl<S> Conn<S> {
    /// Whether the connection must end now (drain deadline passed, or the idle rule says so);
    /// otherwise registers for both. Checked on reads, writes and flushes alike: hyper may be
    /// waiting on either (h2 stops reading while a write to a client that does not read is
    /// stuck).
    fn ended(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Some(io::Error::other("server stopped: drain deadline passed"));
        }
        let why = self.idle.poll_expired(cx)?;
        tracing::debug!(peer = ?self.info.remote_addr, why, "closing connection");
        Some(io::Error::new(io::ErrorKind::TimedOut, why))
    }

    fn new(io: S, mut info: PeerInfo, tasks: &Tasks, held: Held, rule: IdleRule) -> Conn<S> {
        let activity = Activity::new();
        info.activity = Some(activity.clone());
        Conn {
            io,
            info,
            stop: Box::pin(tasks.stopping().cancelled_owned()),
            idle: IdleTimer::new(rule, activity),
            _held: held,
        }
    }
}

impl<S> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.ended(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accepts TLS connections until `shutdown`, yielding handshaken ones.
pub fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    max_connections: usize,
    limits: ConnLimits,
    shutdown: CancellationToken,
    tasks: &Tasks,
) -> mpsc::Receiver<io::Result<Conn<tokio_rustls::server::TlsStream<TcpStream>>>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    let limit = Arc::new(Semaphore::new(max_connections));
    let tasks = tasks.clone();
    tasks.clone().spawn(async move {
        loop {
            let Some((stream, peer, held)) = next(&listener, &limit, &limits, &shutdown).await
            else {
                break;
            };
            let rule = limits.idle;
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let conn_tasks = tasks.clone();
            let stopping = shutdown.clone();
            tasks.spawn(async move {
                let handshake = tokio::select! {
                    h = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => h,
                    // Shutting down: a half-open handshake is not worth waiting for.
                    () = stopping.cancelled() => return,
                };
                match handshake {
                    Ok(Ok(tls)) => {
                        let client_cert_name = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(super::tls::cert_common_name);
                        let info = PeerInfo {
                            remote_addr: Some(peer),
                            client_cert_name,
                            transport: "h2",
                            activity: None,
                        };
                        let _ = tx.send(Ok(Conn::new(tls, info, &conn_tasks, held, rule))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// Accepts plain-text (h2c) connections until `shutdown`.
pub fn accept_plain(
    listener: TcpListener,
    max_connections: usize,
    limits: ConnLimits,
    shutdown: CancellationToken,
    tasks: &Tasks,
) -> mpsc::Receiver<io::Result<Conn<TcpStream>>> {
    let (tx, rx) = mpsc::channel(READY_QUEUE);
    let limit = Arc::new(Semaphore::new(max_connections));
    let conn_tasks = tasks.clone();
    tasks.spawn(async move {
        while let Some((stream, peer, held)) = next(&listener, &limit, &limits, &shutdown).await {
            let info = PeerInfo {
                remote_addr: Some(peer),
                client_cert_name: None,
                transport: "h2c",
                activity: None,
            };
            let conn = Conn::new(stream, info, &conn_tasks, held, limits.idle);
            if tx.send(Ok(conn)).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// The next connection, once a connection slot is free; `None` at shutdown. A connection from
/// a source already at its cap is closed at once (the client sees the connection reset) and
/// the slot waits for the next one.
async fn next(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    limits: &ConnLimits,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr, Held)> {
    let permit = tokio::select! {
        p = limit.clone().acquire_owned() => p.ok()?,
        () = shutdown.cancelled() => return None,
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = limits.peers.try_take(peer.ip()) else {
                    tracing::debug!(%peer, "refused: too many connections from this address");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                return Some((stream, peer, Held { _permit: permit, _peer: slot }));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
