//! The browser app's static files, embedded in the binary at build time from `web/dist/` and
//! served at `/` on the same listener as gRPC and gRPC-Web (any path the gRPC routes do not
//! claim).
//!
//! What a browser gets, whatever the file: a strict Content-Security-Policy (everything from
//! this origin only: no inline scripts or styles, no CDN, no framing), `nosniff`, no referrer.
//! `index.html` is revalidated on every load (`no-cache` with an ETag), so a new server version
//! shows at once; files under `assets/` carry a content hash in their names and are cached for
//! a year. Only `GET` and `HEAD`; anything else is `405`, an unknown path `404`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::{Ready, ready};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/dist/"]
struct Dist;

/// The policy every response carries. `connect-src 'self'`: the app talks to this server only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The media type of a file by its extension (only the kinds a built web app has).
fn media_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// How long a browser may keep a file without asking again.
fn cache_control(path: &str) -> &'static str {
    if path.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" }
}

/// The response for one request (pure: the embedded files are constants).
pub fn respond(method: &Method, path: &str, if_none_match: Option<&[u8]>) -> Response<Vec<u8>> {
    let plain = |status: StatusCode, text: &str| {
        let mut r = Response::new(text.as_bytes().to_vec());
        *r.status_mut() = status;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    let mut resp = if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        let path = path.trim_start_matches('/');
        let path = if path.is_empty() { "index.html" } else { path };
        match Dist::get(path) {
            None => plain(StatusCode::NOT_FOUND, "no such file\n"),
            Some(file) => {
                let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
                let fresh = if_none_match.is_some_and(|v| v == etag.as_bytes());
                let body = if fresh || method == Method::HEAD {
                    Vec::new()
                } else {
                    file.data.into_owned()
                };
                let mut r = Response::new(body);
                if fresh {
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                }
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type(path)));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control(path)));
                h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid value"));
                r
            }
        }
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The router's fallback: every request no gRPC route claims.
#[derive(Clone, Copy, Debug, Default)]
pub struct StaticFiles;

impl<B> tower::Service<Request<B>> for StaticFiles {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A gRPC call to a service this server does not have stays a gRPC answer.
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let st = tonic::Status::unimplemented(format!("no such method: {}", req.uri().path()));
            return ready(Ok(st.into_http()));
        }
        let etag = req.headers().get(header::IF_NONE_MATCH).map(HeaderValue::as_bytes);
        let resp = respond(req.method(), req.uri().path(), etag);
        ready(Ok(
            resp.map(|b| tonic::body::Body::new(http_body_util::Full::new(bytes::Bytes::from(b))))
        ))
    }
}

/// tonic-web's layer, except for plain HTTP/1.1 requests (a browser loading the page over
/// HTTP/1.1): tonic-web answers every HTTP/1.1 request that is not gRPC-Web with `400`, so
/// those go straight to the router (and its [`StaticFiles`] fallback). HTTP/2 requests and
/// gRPC-Web on either version take tonic-web's path as before.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebLayer;

impl<S: Clone> tower::Layer<S> for WebLayer {
    type Service = WebService<S>;

    fn layer(&self, inner: S) -> WebService<S> {
        WebService { grpc_web: tonic_web::GrpcWebLayer::new().layer(inner.clone()), inner }
    }
}

/// See [`WebLayer`].
#[derive(Clone, Debug)]
pub struct WebService<S> {
    grpc_web: tonic_web::GrpcWebService<S>,
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for WebService<S>
where
    S: tower::Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The router is always ready, and tonic-web's service only forwards its readiness, so
        // polling one of the two clones stands for both.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        use futures_util::FutureExt;
        let grpc_web = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"));
        let http1 = req.version() < http::Version::HTTP_2;
        if http1 && !grpc_web && req.method() != Method::OPTIONS {
            let fut = self.inner.call(req.map(tonic::body::Body::new));
            fut.map(|r| r.map(|resp| resp.map(tonic::body::Body::new))).boxed()
        } else {
            tower::Service::call(&mut self.grpc_web, req).boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_served_with_its_policy_and_caching() {
        let r = respond(&Method::GET, "/", None);
        assert_eq!(r.status(), StatusCode::OK);
        let page = String::from_utf8_lossy(r.body());
        assert!(page.contains("<html"), "{page}");
        let h = r.headers();
        assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        // Revalidation: the same ETag is a 304 without a body.
        let etag = h[header::ETAG].as_bytes().to_vec();
        let again = respond(&Method::GET, "/index.html", Some(&etag));
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(again.body().is_empty());
        assert_eq!(respond(&Method::GET, "/", Some(b"\"stale\"")).status(), StatusCode::OK);
    }

    #[test]
    fn unknown_paths_and_other_methods_are_refused_with_the_same_headers() {
        for (method, path, status) in [
            (Method::GET, "/no-such-file.js", StatusCode::NOT_FOUND),
            (Method::GET, "/../Cargo.toml", StatusCode::NOT_FOUND),
            (Method::POST, "/", StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let r = respond(&method, path, None);
            assert_eq!(r.status(), status, "{method} {path}");
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        }
        assert_eq!(cache_control("assets/app-3f2a.js"), "public, max-age=31536000, immutable");
        assert_eq!(media_type("assets/app.css"), "text/css; charset=utf-8");
    }
}
