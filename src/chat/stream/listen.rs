//! `Listen` + `SendFrame`: a `Connect` stream split in two for clients that cannot stream
//! requests (browsers over gRPC-Web, HTTP/1.1 proxies).
//!
//! A `Listen` call opens an ordinary stream session whose inbound frames come from a
//! [`Listeners`] entry instead of the request body; `SendFrame` calls put frames into that
//! entry. Everything else (limits, resume, revocation, presence, shutdown) is the session's, so
//! it cannot differ from `Connect`. The entry lives exactly as long as the session reads from
//! it: when the session ends (the client went away, token expiry, revocation, shutdown), it
//! drops its [`Inbound`], which removes the entry, and later `SendFrame`s get `NOT_FOUND`.
//!
//! Bounded: one entry per open `Listen` session (and sessions are bounded per user by
//! `max_streams_per_user`, users' connections by the connection limits); each entry's queue
//! holds [`FRAME_QUEUE`] frames, and a `SendFrame` that finds it full waits at most the
//! stream's stuck timeout, then is refused with `RESOURCE_EXHAUSTED` (the session is not
//! reading because it has [`super::MAX_PENDING_SENDS`] sends awaiting their acks, or its
//! client does not read what it answers).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::chat::ChatError;
use crate::proto::ClientFrame;

/// Frames queued for one `Listen` session that it has not read yet; a `SendFrame` beyond
/// waits (see the module comment).
pub const FRAME_QUEUE: usize = 16;

/// The open `Listen` sessions, by stream id.
#[derive(Default)]
pub struct Listeners {
    open: Mutex<HashMap<String, Entry>>,
    /// How many are open, for whoever waits for a change (tests, metrics).
    count: tokio::sync::watch::Sender<usize>,
}

struct Entry {
    /// The user who opened the stream: the only one who may send to it.
    owner: String,
    frames: mpsc::Sender<ClientFrame>,
}

/// Why a frame was not taken.
fn not_found() -> ChatError {
    ChatError::NotFound(
        "no open Listen stream with this stream_id for you; open one with Listen".into(),
    )
}

impl Listeners {
    /// Registers a new stream of `owner`: its unguessable id (128 random bits, hex) and the
    /// inbound half its session reads.
    pub fn register(self: &Arc<Self>, owner: &str) -> (String, Inbound) {
        let (frames, rx) = mpsc::channel(FRAME_QUEUE);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let id = loop {
            let id = format!("{:032x}", rand::random::<u128>());
            if !open.contains_key(&id) {
                break id;
            }
        };
        open.insert(id.clone(), Entry { owner: owner.to_string(), frames });
        self.count.send_replace(open.len());
        (id.clone(), Inbound { rx, _entry: EntryGuard { listeners: self.clone(), id } })
    }

    /// Open `Listen` streams.
    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no `Listen` stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of open `Listen` streams, as it changes.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Hands `frame` to `caller`'s stream `stream_id`, waiting at most `wait` for room in its
    /// queue. Another user's stream is `NOT_FOUND`, exactly like one that never existed.
    pub async fn deliver(
        &self,
        caller: &str,
        stream_id: &str,
        frame: ClientFrame,
        wait: Duration,
    ) -> Result<(), ChatError> {
        if stream_id.is_empty() {
            return Err(ChatError::InvalidArgument(
                "stream_id is empty: give the id from the Listen stream's Listening frame".into(),
            ));
        }
        let frames = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(stream_id) {
                Some(e) if e.owner == caller => e.frames.clone(),
                _ => return Err(not_found()),
            }
        };
        match frames.send_timeout(frame, wait).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(not_found()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                Err(ChatError::ResourceExhausted(format!(
                    "the stream took no frame for {} s (its sends await their acks, or its \
                     answers are not being read); retry later",
                    wait.as_secs_f64()
                )))
            }
        }
    }

    fn remove(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(id);
        self.count.send_replace(open.len());
    }
}

/// The frames `SendFrame` delivered to one stream, as its session reads them. Dropping it
/// (the session ended) closes the stream to `SendFrame`.
pub struct Inbound {
    rx: mpsc::Receiver<ClientFrame>,
    _entry: EntryGuard,
}

struct EntryGuard {
    listeners: Arc<Listeners>,
    id: String,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        self.listeners.remove(&self.id);
    }
}

impl Stream for Inbound {
    type Item = Result<ClientFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Never ends while registered (the registry holds a sender): a Listen stream ends by
        // the session's own rules, not because no frame is coming.
        self.rx.poll_recv(cx).map(|f| f.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::proto::{Ping, client_frame};

    fn ping(nonce: u64) -> ClientFrame {
        ClientFrame { kind: Some(client_frame::Kind::Ping(Ping { nonce })) }
    }

    const WAIT: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn only_the_owner_reaches_an_open_stream_and_nobody_a_closed_one() {
        let l = Arc::new(Listeners::default());
        let (id, mut inbound) = l.register("alice");
        let (other, _keep) = l.register("alice");
        assert_eq!(id.len(), 32);
        assert_ne!(id, other, "every stream has its own id");
        l.deliver("alice", &id, ping(1), WAIT).await.unwrap();
        let got = inbound.next().await.unwrap().unwrap();
        assert_eq!(got, ping(1));
        for (who, sid) in [("mallory", id.as_str()), ("alice", "0123456789abcdef")] {
            let e = l.deliver(who, sid, ping(2), WAIT).await.unwrap_err();
            assert!(matches!(e, ChatError::NotFound(_)), "{who} {sid}: {e:?}");
        }
        assert!(matches!(
            l.deliver("alice", "", ping(2), WAIT).await,
            Err(ChatError::InvalidArgument(_))
        ));
        assert_eq!(l.len(), 2);
        drop(inbound);
        assert_eq!(l.len(), 1, "the session's end removes its entry");
        let e = l.deliver("alice", &id, ping(3), WAIT).await.unwrap_err();
        assert!(matches!(e, ChatError::NotFound(_)), "{e:?}");
    }

    #[tokio::test]
    async fn a_stream_that_reads_nothing_refuses_frames_beyond_its_queue() {
        let l = Arc::new(Listeners::default());
        let (id, mut inbound) = l.register("bob");
        for n in 0..FRAME_QUEUE as u64 {
            l.deliver("bob", &id, ping(n), WAIT).await.unwrap();
        }
        let e = l.deliver("bob", &id, ping(99), WAIT).await.unwrap_err();
        assert!(matches!(e, ChatError::ResourceExhausted(_)), "{e:?}");
        // Reading makes room again, in order.
        assert_eq!(inbound.next().await.unwrap().unwrap(), ping(0));
        l.deliver("bob", &id, ping(100), WAIT).await.unwrap();
    }
}
