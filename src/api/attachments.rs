//! `AttachmentService`, thin over [`crate::chat::attachments`], and the download links'
//! HTTP route (`GET /attachments/<id>?t=...`), which browsers fetch without a token.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::{Api, principal};
use crate::attachments::browser_headers;
use crate::chat::attachments::Attachments;
use crate::clock::now_ms;
use crate::proto::{self, attachment_service_server::AttachmentService};

/// The `AttachmentService` handlers.
pub struct AttachmentsApi(pub Api);

#[tonic::async_trait]
impl AttachmentService for AttachmentsApi {
    async fn start_upload(
        &self,
        req: GrpcRequest<proto::StartUploadRequest>,
    ) -> Result<GrpcResponse<proto::Upload>, Status> {
        let who = principal(&req)?;
        let u = self.0.attachments.start(&who, req.get_ref(), now_ms()).await?;
        Ok(GrpcResponse::new(u))
    }

    async fn upload_chunk(
        &self,
        req: GrpcRequest<proto::UploadChunkRequest>,
    ) -> Result<GrpcResponse<proto::Upload>, Status> {
        let who = principal(&req)?;
        let u = self.0.attachments.chunk(&who, req.into_inner(), now_ms()).await?;
        Ok(GrpcResponse::new(u))
    }

    async fn get_upload(
        &self,
        req: GrpcRequest<proto::GetUploadRequest>,
    ) -> Result<GrpcResponse<proto::Upload>, Status> {
        let who = principal(&req)?;
        Ok(GrpcResponse::new(self.0.attachments.upload(&who, &req.get_ref().upload_id)?))
    }

    async fn get_attachment(
        &self,
        req: GrpcRequest<proto::GetAttachmentRequest>,
    ) -> Result<GrpcResponse<proto::AttachmentAccess>, Status> {
        let who = principal(&req)?;
        let a = self.0.attachments.access(&who, &req.get_ref().attachment_id, now_ms())?;
        Ok(GrpcResponse::new(a))
    }

    async fn download(
        &self,
        req: GrpcRequest<proto::DownloadRequest>,
    ) -> Result<GrpcResponse<tonic::codegen::BoxStream<proto::DownloadChunk>>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        // Refused before the stream starts (NOT_FOUND as a status, not a broken stream).
        let (_, chunks) = self.0.attachments.open(&who, &r.attachment_id, r.offset)?;
        let stream = futures_util::StreamExt::map(chunks, |c| {
            c.map(|(offset, data)| proto::DownloadChunk { offset, data }).map_err(Status::from)
        });
        Ok(GrpcResponse::new(Box::pin(stream)))
    }
}

/// The route of download links (`/attachments/<id>`), outside the auth layers: the link's
/// `t` is the proof, checked with the user's current standing (`Attachments::link_user`).
#[derive(Clone)]
pub struct LinkRoute(pub Attachments);

/// The route's path pattern.
pub const LINK_PATH: &str = "/attachments/{id}";

impl<B: Send + 'static> tower::Service<Request<B>> for LinkRoute {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let svc = self.0.clone();
        let activity =
            req.extensions().get::<crate::transport::PeerInfo>().and_then(|p| p.activity.clone());
        Box::pin(async move { Ok(serve_link(&svc, req.method(), req.uri(), activity)) })
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<tonic::body::Body> {
    let mut r = Response::new(tonic::body::Body::new(http_body_util::Full::new(
        bytes::Bytes::from_static(text.as_bytes()),
    )));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SANDBOX));
    r
}

/// Nothing in an uploaded file may run, even if a browser is talked into rendering it.
const SANDBOX: &str = "default-src 'none'; sandbox; frame-ancestors 'none'";

/// The answer to one link request: the file, streamed chunk by chunk, or a plain 404 that is
/// the same for a bad link, an expired one, an unknown file and a file the user may no
/// longer see. A good link counts for the connection's idle rule as an authenticated request
/// that is open until its body is sent, so a slow download on a connection that carried
/// nothing else is not cut at `auth_timeout_secs`.
fn serve_link(
    svc: &Attachments,
    method: &Method,
    uri: &http::Uri,
    activity: Option<std::sync::Arc<crate::transport::guard::Activity>>,
) -> Response<tonic::body::Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served here\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let id = uri.path().trim_start_matches("/attachments/");
    let t = uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("t="));
    let now = now_ms();
    let Some(who) = t.and_then(|t| svc.link_user(id, t, now)) else {
        return plain(StatusCode::NOT_FOUND, "no such file, or the link has expired\n");
    };
    let Ok((rec, chunks)) = svc.open(&who, id, 0) else {
        return plain(StatusCode::NOT_FOUND, "no such file, or the link has expired\n");
    };
    let open = activity.map(|a| {
        a.authenticated();
        a.request()
    });
    let (content_type, disposition) = browser_headers(&rec.media_type, &rec.name);
    let body = if method == Method::HEAD {
        tonic::body::Body::empty()
    } else {
        use futures_util::StreamExt;
        // A file gone meanwhile (deleted, banned) ends the response short: the browser sees a
        // failed download (Content-Length says so). The stream holds `open`: the request is
        // open until its last chunk is taken.
        let frames = chunks.take_while(|c| std::future::ready(c.is_ok())).map(move |c| {
            let _open = &open;
            let data = c.map(|(_, d)| d).unwrap_or_default();
            Ok::<_, Infallible>(http_body::Frame::data(bytes::Bytes::from(data)))
        });
        tonic::body::Body::new(http_body_util::StreamBody::new(frames))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let value = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    h.insert(header::CONTENT_TYPE, value(content_type));
    h.insert(header::CONTENT_DISPOSITION, value(disposition));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(rec.size));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(SANDBOX));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    r
}
