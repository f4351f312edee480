//! Tower layers around the whole router, so both transports get them:
//! - [`AuthLayer`] verifies the bearer token of every RPC except `Register`, `Login`,
//!   `Refresh`, health and reflection, and puts the [`Principal`] into the request;
//! - [`StatusMapLayer`] maps tonic's own codes to API.md's: an undecodable request
//!   (`INTERNAL` "failed to decode") -> `INVALID_ARGUMENT`, an over-size message
//!   (`OUT_OF_RANGE`) -> `RESOURCE_EXHAUSTED`;
//! - [`ActivityLayer`] counts each connection's open requests (until the response body is
//!   done), for the idle rule of `transport::guard`; `AuthLayer` marks a connection
//!   authenticated when a request on it carries a valid token.

use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tonic::Status;

use crate::auth::{Accounts, Principal};
use crate::transport::PeerInfo;

/// A refused authentication's reason, from a fixed set (a metric label).
fn failure_reason(message: &str) -> &'static str {
    if message.starts_with("missing") {
        "missing"
    } else if message.contains("revoked") {
        "revoked"
    } else if message.contains("disabled") {
        "disabled"
    } else if message.contains("certificate") {
        "binding"
    } else if message.contains("expired") {
        "expired"
    } else {
        "invalid"
    }
}

/// Paths that need no token.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/edgechat.v1.AuthService/Register"
            | "/edgechat.v1.AuthService/Login"
            | "/edgechat.v1.AuthService/Refresh"
    ) || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
}

/// Extracts the bearer token: exactly one `authorization` header, scheme `Bearer` in any
/// letter case.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Status> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer token"))?;
    if values.next().is_some() {
        return Err(Status::unauthenticated("more than one authorization header"));
    }
    if value.len() > crate::auth::token::MAX_TOKEN_BYTES + 16 {
        return Err(Status::unauthenticated("token is longer than 8 KiB"));
    }
    let value =
        value.to_str().map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated("authorization scheme must be Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::unauthenticated("authorization has an empty token"));
    }
    Ok(token)
}

/// Authenticates requests (see the module doc).
#[derive(Clone)]
pub struct AuthLayer {
    accounts: Accounts,
    bind_client_cert: bool,
}

impl AuthLayer {
    /// A layer checking tokens with `accounts`; with `bind_client_cert`, the connection's
    /// client certificate name must also equal the token's username.
    pub fn new(accounts: Accounts, bind_client_cert: bool) -> Self {
        AuthLayer { accounts, bind_client_cert }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, accounts: self.accounts.clone(), bind_client_cert: self.bind_client_cert }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    accounts: Accounts,
    bind_client_cert: bool,
}

/// With `bind_client_cert`: a stolen token is useless without the device's key.
fn check_binding(p: &Principal, peer: Option<&PeerInfo>) -> Result<(), Status> {
    match peer.and_then(|p| p.client_cert_name.as_deref()) {
        Some(name) if name == p.username => Ok(()),
        Some(_) => Err(Status::unauthenticated(
            "the client certificate belongs to another user than the token",
        )),
        None => Err(Status::unauthenticated(
            "this server binds tokens to client certificates: connect with your certificate",
        )),
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Auth<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Health checks are how supervisors watch the server: a prober's long-lived `Watch`
        // connection counts as authenticated for the idle rule (it holds one connection slot
        // of its source like any other).
        if req.uri().path().starts_with("/grpc.health.v1.Health/")
            && let Some(a) = req.extensions().get::<PeerInfo>().and_then(|i| i.activity.as_ref())
        {
            a.authenticated();
        }
        if !is_public(req.uri().path()) {
            let checked: Result<Principal, Status> = bearer_token(req.headers())
                .and_then(|t| {
                    self.accounts.authenticate(t, crate::clock::now_ms()).map_err(Status::from)
                })
                .and_then(|p| {
                    if self.bind_client_cert {
                        check_binding(&p, req.extensions().get::<PeerInfo>())?;
                    }
                    Ok(p)
                });
            match checked {
                Ok(p) => {
                    if let Some(a) =
                        req.extensions().get::<PeerInfo>().and_then(|i| i.activity.as_ref())
                    {
                        a.authenticated();
                    }
                    req.extensions_mut().insert(p);
                }
                Err(status) => {
                    crate::metrics::auth_failed(failure_reason(status.message()));
                    return futures_util::future::Either::Right(std::future::ready(Ok(
                        status.into_http()
                    )));
                }
            }
        }
        futures_util::future::Either::Left(self.inner.call(req))
    }
}

/// Counts a connection's open requests (see the module doc).
#[derive(Clone, Copy)]
pub struct ActivityLayer;

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = ActivityCount<S>;
    fn layer(&self, inner: S) -> ActivityCount<S> {
        ActivityCount { inner }
    }
}

/// The service [`ActivityLayer`] makes.
#[derive(Clone)]
pub struct ActivityCount<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for ActivityCount<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<Tracked<RB>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let open = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|i| i.activity.as_ref())
            .map(|a| a.request());
        let method = crate::metrics::method_label(req.uri().path());
        let started = std::time::Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            // A trailers-only answer (an error before any message) carries its status here.
            let mut rpc = Some((method, started));
            if let Some(code) = grpc_code(res.headers())
                && let Some((method, started)) = rpc.take()
            {
                crate::metrics::rpc_done(&method, code, started.elapsed());
            }
            Ok(res.map(|inner| Tracked { inner, _open: open, rpc }))
        })
    }
}

/// The status name in a `grpc-status` header or trailer.
fn grpc_code(h: &http::HeaderMap) -> Option<&'static str> {
    let n: i32 = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(crate::chat::stream::code_name(tonic::Code::from_i32(n)))
}

/// A response body that keeps its request counted as open until it is done (or dropped), and
/// records the RPC (method, final status, time) when its trailers pass.
pub struct Tracked<B> {
    inner: B,
    _open: Option<crate::transport::guard::OpenRequest>,
    rpc: Option<(String, std::time::Instant)>,
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        // Ended without trailers: the client went away (or the stream was cut).
        if let Some((method, started)) = self.rpc.take() {
            crate::metrics::rpc_done(&method, "CANCELLED", started.elapsed());
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(trailers) = f.trailers_ref()
            && let Some((method, started)) = self.rpc.take()
        {
            let code = grpc_code(trailers).unwrap_or("UNKNOWN");
            crate::metrics::rpc_done(&method, code, started.elapsed());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Maps tonic's codes to the contract's (see the module doc).
#[derive(Clone, Copy)]
pub struct StatusMapLayer;

impl<S> tower::Layer<S> for StatusMapLayer {
    type Service = StatusMap<S>;
    fn layer(&self, inner: S) -> StatusMap<S> {
        StatusMap { inner }
    }
}

/// The service [`StatusMapLayer`] makes.
#[derive(Clone)]
pub struct StatusMap<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<Request<B>> for StatusMap<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(Response<RB>) -> Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        self.inner.call(req).map_ok(map_trailers_only as fn(Response<RB>) -> Response<RB>)
    }
}

/// Rewrites the status of a trailers-only response (how tonic answers a request it could not
/// decode) to the contract's code.
fn map_trailers_only<RB>(mut res: Response<RB>) -> Response<RB> {
    let headers = res.headers_mut();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("");
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
    let new = match code {
        // OUT_OF_RANGE: tonic's code for a message over the decode limit.
        "11" => {
            Some(("8", "request message is larger than the server's limit (64 KiB by default)"))
        }
        // INTERNAL with prost's decode error: a malformed request.
        "13" if message.contains("failed%20to%20decode")
            || message.contains("failed to decode") =>
        {
            Some(("3", "request does not decode as the expected protobuf message"))
        }
        _ => None,
    };
    if let Some((code, message)) = new {
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&percent(message)).unwrap_or(HeaderValue::from_static("")),
        );
    }
    res
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b".-_~()".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_rules() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])).unwrap(), "abc");
        assert_eq!(bearer_token(&headers(&["bEaReR abc"])).unwrap(), "abc");
        for bad in [&[][..], &["Basic abc"], &["Bearer"], &["Bearer  "], &["Bearer a", "Bearer b"]]
        {
            let e = bearer_token(&headers(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let long = format!("Bearer {}", "a".repeat(64 * 1024));
        assert!(bearer_token(&headers(&[&long])).unwrap_err().message().contains("8 KiB"));
    }

    #[test]
    fn public_paths() {
        assert!(is_public("/edgechat.v1.AuthService/Login"));
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(!is_public("/edgechat.v1.AuthService/WhoAmI"));
        assert!(!is_public("/edgechat.v1.RoomService/CreateRoom"));
    }
}
