//! The `Connect` route, served by hand instead of by the generated `ChatServiceServer`, so
//! that a frame which does not decode is one bad frame, not the end of the stream.
//!
//! tonic's `Streaming` stops for good after a decode error; API.md wants a `StreamError`
//! for that frame and the stream to live on. This route decodes each frame itself
//! ([`LenientDecoder`]: the decode error becomes an item) and otherwise does exactly what the
//! generated route does (same message size limit, same handler in `chat::stream`).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status, Streaming};

use super::{Api, principal};
use crate::chat::stream::{self, OutFrame};
use crate::proto::ClientFrame;

/// The path this route serves.
pub const PATH: &str = "/edgechat.v1.ChatService/Connect";

/// A frame, or why it did not decode.
pub type Frame = Result<ClientFrame, String>;

/// Protobuf both ways, but decode errors are items, not stream errors; room events go out
/// as the bytes every subscriber shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct LenientCodec;

impl Codec for LenientCodec {
    type Encode = OutFrame;
    type Decode = Frame;
    type Encoder = OutEncoder;
    type Decoder = LenientDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        OutEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder
    }
}

/// Encodes a frame built for the stream with prost, and copies a shared event's encoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutEncoder;

impl Encoder for OutEncoder {
    type Item = OutFrame;
    type Error = Status;

    fn encode(&mut self, item: OutFrame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            // EncodeBuf grows as needed, so prost's only error (no space) cannot happen.
            OutFrame::Frame(f) => prost::Message::encode(&*f, buf)
                .map_err(|e| Status::internal(format!("encoding a frame: {e}"))),
            OutFrame::Event(e) => {
                buf.put_slice(e.frame_bytes());
                Ok(())
            }
        }
    }
}

/// See [`LenientCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LenientDecoder;

impl Decoder for LenientDecoder {
    type Item = Frame;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
        let frame = <ClientFrame as prost::Message>::decode(&mut *buf).map_err(|e| e.to_string());
        // Whatever a failed decode left of this frame is skipped, so the next frame starts
        // at its own header.
        buf.advance(buf.remaining());
        Ok(Some(frame))
    }
}

/// The route (a tower service for the router).
#[derive(Clone)]
pub struct ConnectRoute(pub Api);

struct Handler(Api);

impl tonic::server::StreamingService<Frame> for Handler {
    type Response = OutFrame;
    type ResponseStream = stream::OutStream;
    type Future = BoxFuture<'static, Result<Response<stream::OutStream>, Status>>;

    fn call(&mut self, req: Request<Streaming<Frame>>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let who = principal(&req)?;
            let inbound = req.into_inner().map(|item| match item {
                Ok(Ok(frame)) => Ok(frame),
                Ok(Err(why)) => Err(Status::invalid_argument(why)),
                Err(status) => Err(status),
            });
            Ok(Response::new(stream::open(api.stream_deps(), who, Box::pin(inbound))?))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for ConnectRoute
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move {
            let limit = api.config.limits.max_message_bytes;
            let mut grpc = tonic::server::Grpc::new(LenientCodec)
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.streaming(Handler(api), req).await)
        })
    }
}
