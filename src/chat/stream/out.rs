//! The outbound side of one stream: every frame (events, acks, errors, signals) passes one
//! bounded queue of [`OUT_QUEUE`] frames, read by the transport as the client reads.
//!
//! When the client reads slowly the queue fills and whoever queues waits (followers fall
//! behind in their room rings and later catch up from the store; the session stops reading
//! client frames). A frame that cannot be queued for `stuck` ends the stream at once, ahead of
//! the queued frames, with `RESOURCE_EXHAUSTED`; the client resumes with `after_seq`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use crate::chat::hub::{SharedEvent, StreamSlot};
use crate::chat::messages::ChatError;
use crate::proto::{self, server_frame};

/// Outbound frames queued per stream before senders wait.
pub const OUT_QUEUE: usize = 64;

/// One queued outbound frame: a frame built for this stream, or a room event whose wire
/// encoding every subscriber shares ([`SharedEvent`]).
#[derive(Debug)]
pub enum OutFrame {
    /// Built for this stream (acks, errors, signals, typing, `Subscribed`). Boxed: a queue
    /// slot is then 16 bytes, not 216, for the events that make up most of the traffic.
    Frame(Box<proto::ServerFrame>),
    /// A room event, encoded once for all its subscribers.
    Event(Arc<SharedEvent>),
}

impl OutFrame {
    /// The frame as a message (for a route that encodes with prost itself).
    pub fn into_frame(self) -> proto::ServerFrame {
        match self {
            OutFrame::Frame(f) => *f,
            OutFrame::Event(e) => proto::ServerFrame {
                kind: Some(server_frame::Kind::Event(proto::RoomEvent::clone(&e))),
            },
        }
    }
}

/// The response stream: frames from the queue, then the final status (if any). A fatal end
/// (stuck outbound) jumps the queue.
pub struct OutStream {
    rx: mpsc::Receiver<OutFrame>,
    fatal: Pin<Box<WaitForCancellationFutureOwned>>,
    status: Arc<Mutex<Option<Status>>>,
    done: bool,
    /// The user's stream slot, for as long as the transport holds this stream.
    slot: Option<StreamSlot>,
}

impl OutStream {
    /// Holds `slot` for the stream's life.
    pub(super) fn hold(&mut self, slot: StreamSlot) {
        self.slot = Some(slot);
    }
}

impl Stream for OutStream {
    type Item = Result<OutFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.fatal.as_mut().poll(cx).is_ready() {
            self.done = true;
            let st = self.status.lock().expect("status lock").take();
            return Poll::Ready(Some(Err(
                st.unwrap_or_else(|| Status::unavailable("stream ended"))
            )));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.status.lock().expect("status lock").take().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The queue's sending half, shared by a session and its followers.
#[derive(Clone)]
pub(super) struct Out {
    tx: mpsc::Sender<OutFrame>,
    status: Arc<Mutex<Option<Status>>>,
    pub(super) fatal: CancellationToken,
    stuck: Duration,
}

/// A new queue: the sending half and the response stream.
pub(super) fn channel(stuck: Duration) -> (Out, OutStream) {
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let fatal = CancellationToken::new();
    let status = Arc::new(Mutex::new(None));
    let out = Out { tx, status: status.clone(), fatal: fatal.clone(), stuck };
    let stream =
        OutStream { rx, fatal: Box::pin(fatal.cancelled_owned()), status, done: false, slot: None };
    (out, stream)
}

impl Out {
    /// Resolves once the response stream is gone (the transport dropped it: the client went
    /// away). A `Listen` session hears of that only here: its inbound never ends by itself.
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }

    /// Queues a frame; `false` if the stream is over (closed, or stuck past the deadline, which
    /// ends it).
    pub(super) async fn send(&self, kind: server_frame::Kind) -> bool {
        self.queue(OutFrame::Frame(Box::new(proto::ServerFrame { kind: Some(kind) }))).await
    }

    /// Queues a room event (its shared encoding); `false` as for [`Out::send`].
    pub(super) async fn send_event(&self, event: Arc<SharedEvent>) -> bool {
        self.queue(OutFrame::Event(event)).await
    }

    async fn queue(&self, frame: OutFrame) -> bool {
        // An ended stream (revoked, stuck) is no longer read: whoever waits here stops at once.
        if self.fatal.is_cancelled() {
            return false;
        }
        // With room in the queue (nearly always) no deadline timer is set up.
        let frame = match self.tx.try_send(frame) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        let queued = tokio::select! {
            q = tokio::time::timeout(self.stuck, self.tx.send(frame)) => q,
            () = self.fatal.cancelled() => return false,
        };
        match queued {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                crate::metrics::hot().slow_consumer_disconnects.increment(1);
                self.end_now(Status::resource_exhausted(
                    "stream closed: the client did not read for too long; reconnect and resume with after_seq",
                ));
                false
            }
        }
    }

    /// Ends the stream at once with `status`, ahead of queued frames.
    pub(super) fn end_now(&self, status: Status) {
        self.status.lock().expect("status lock").get_or_insert(status);
        self.fatal.cancel();
    }

    /// What ends this stream at once from outside (the hub, on revocation). It holds no
    /// sender: the response stream still ends when the session and its followers are gone.
    pub(super) fn ender(&self) -> impl Fn(Status) + Send + Sync + 'static {
        let (status, fatal) = (self.status.clone(), self.fatal.clone());
        move |st| {
            status.lock().expect("status lock").get_or_insert(st);
            fatal.cancel();
        }
    }

    /// Ends the stream with `status` after the frames already queued.
    pub(super) fn end_after_queue(&self, status: Status) {
        self.status.lock().expect("status lock").get_or_insert(status);
    }

    /// Queues the `StreamError` of a domain error.
    pub(super) async fn error(&self, e: &ChatError, room_id: &str, cmid: &str) -> bool {
        self.status_error(&crate::api::status::chat_status(e), room_id, cmid).await
    }

    /// Queues a `StreamError` for `status` (a per-frame error: the stream lives on).
    pub(super) async fn status_error(&self, status: &Status, room_id: &str, cmid: &str) -> bool {
        self.send(server_frame::Kind::Error(stream_error(status, room_id, cmid))).await
    }
}

/// The wire `StreamError` for a status.
pub fn stream_error(status: &Status, room_id: &str, cmid: &str) -> proto::StreamError {
    proto::StreamError {
        code: code_name(status.code()).into(),
        message: status.message().into(),
        client_message_id: cmid.into(),
        room_id: room_id.into(),
    }
}

/// The gRPC status name (`PERMISSION_DENIED`, ...), as `StreamError.code` carries it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
