//! The cluster's log on NATS JetStream (SCALE-OUT.md E1): one stream, `EC_EVENTS`, on one
//! subject, holding every change (`change::Entry`) in the order every node applies it. The
//! stream's own sequence is the log position; room seqs, notification ids and every other
//! number are computed by applying the changes in that order (docs/cluster.md says why
//! this, and not a compare-and-set per room, is how seqs are assigned).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, ErrorCode, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prost::Message as _;

use super::ClusterError;
use crate::change::Entry;

/// The stream's name.
pub const STREAM: &str = "EC_EVENTS";
/// The one subject of the stream.
pub const SUBJECT: &str = "ec.changes";
/// The header naming the node and request an entry came from: `<node>.<request>` in hex.
pub const ORIGIN_HEADER: &str = "Ec-Origin";
/// At least the idempotency promise (API.md: 24 h) plus an hour of clock and retry slack.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(25 * 3600);
/// How long an append waits for JetStream's ack before it is "unavailable" (and retried by
/// the client). The client library's default is 5 s, which is also how long every append in
/// flight to a killed leader would stall.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes are small (text is capped far below this); a bigger one is a bug, refused by NATS.
pub const MAX_ENTRY_BYTES: i32 = 64 * 1024;

/// The stream as edgechat creates it. `replicas` is 3 in production (survives one server);
/// the tests of a single server use 1.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: MAX_ENTRY_BYTES,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        description: Some("edgechat's changes: the cluster's source of truth".into()),
        ..Default::default()
    }
}

/// The first setting of an existing stream that breaks a guarantee, named as NATS names it
/// (so an operator can find it in `nats stream info`), or `None` if it is fit. Pure.
pub fn unfit_setting(c: &stream::Config, replicas: usize) -> Option<String> {
    let want = stream_config(replicas);
    if c.subjects != want.subjects {
        return Some(format!("subjects is {:?}, not {:?}", c.subjects, want.subjects));
    }
    if c.storage != stream::StorageType::File {
        return Some("storage is not file: a restart would lose every room".into());
    }
    if c.num_replicas < replicas {
        return Some(format!(
            "num_replicas is {}, fewer than the {replicas} this node requires",
            c.num_replicas
        ));
    }
    if c.retention != stream::RetentionPolicy::Limits {
        return Some("retention is not limits: consumers would delete room history".into());
    }
    if c.max_age != Duration::ZERO || c.max_messages >= 0 || c.max_bytes >= 0 {
        return Some("max_age, max_msgs or max_bytes is set: NATS would drop room history".into());
    }
    if c.max_messages_per_subject >= 0 {
        return Some("max_msgs_per_subject is set: NATS would drop room history".into());
    }
    if c.duplicate_window < DUPLICATE_WINDOW {
        return Some(format!(
            "duplicate_window is {:?}, shorter than {DUPLICATE_WINDOW:?}: a retried send could post twice",
            c.duplicate_window
        ));
    }
    if !c.deny_delete || !c.deny_purge {
        return Some(
            "deny_delete and deny_purge must both be true: a gap would break every view".into(),
        );
    }
    if !c.allow_direct {
        return Some("allow_direct is false: nodes read entries back with direct gets".into());
    }
    if matches!(c.persist_mode, Some(stream::PersistenceMode::Async)) {
        return Some("persist_mode is async: acks would come before the write is stored".into());
    }
    if c.mirror.is_some() || c.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Some("the stream mirrors or sources another: appends would not be checked".into());
    }
    None
}

/// Who appended an entry: a node (random per process start) and its request counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The node.
    pub node: u64,
    /// The request on that node.
    pub request: u64,
}

/// One entry as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// Its position in the log (stream sequence).
    pub at: u64,
    /// Who appended it (absent for entries not made by a node).
    pub origin: Option<Origin>,
    /// The change.
    pub entry: Entry,
}

/// Why an append was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// NATS did not answer or has no quorum: nothing was acknowledged, the client retries.
    /// (The entry may still have been stored: then every node applies it, and a retried
    /// send is answered as a retry.)
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// Refused for good (too big, stream missing): a bug or a misconfiguration.
    #[error("the log refused the change: {0}")]
    Refused(String),
}

/// The JetStream log.
#[derive(Clone)]
pub struct JetStreamLog {
    js: jetstream::Context,
    stream: stream::Stream,
}

impl JetStreamLog {
    /// Opens `EC_EVENTS`, creating it when missing, and checks its settings. JetStream
    /// answers "temporarily unavailable" for a while after its servers start (electing a
    /// meta leader): such answers are retried for at most `wait`. A stream with a setting
    /// that breaks a guarantee is refused at once, naming the setting.
    pub async fn open(
        client: async_nats::Client,
        replicas: usize,
        wait: Duration,
    ) -> Result<Self, ClusterError> {
        // Acks wait at most ACK_TIMEOUT: an append sent to a leader that just died is
        // answered "unavailable" then (the client retries).
        let js = jetstream::ContextBuilder::new().timeout(ACK_TIMEOUT).build(client);
        let deadline = tokio::time::Instant::now() + wait;
        let stream = loop {
            let tried = match js.get_stream(STREAM).await {
                Ok(s) => Ok(s),
                Err(e)
                    if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
                {
                    js.create_stream(stream_config(replicas))
                        .await
                        .map_err(|e| format!("creating stream {STREAM}: {e}"))
                }
                Err(e) => Err(format!("reading stream {STREAM}: {e}")),
            };
            match tried {
                Ok(s) => break s,
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(ClusterError::Unavailable(why));
                }
                Err(why) => {
                    tracing::warn!(%why, "JetStream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        if let Some(why) = unfit_setting(&stream.cached_info().config, replicas) {
            return Err(ClusterError::Stream(format!(
                "stream {STREAM} is unfit: {why}; fix it (`nats stream edit {STREAM}`) or remove it"
            )));
        }
        Ok(JetStreamLog { js, stream })
    }

    /// Sends `entry`; returns once it is on its way (entries sent one after another from one
    /// task are stored in that order) with the future of JetStream's ack: its log position,
    /// once a quorum stored it (on disk, with `sync_interval: always`).
    pub async fn append(
        &self,
        entry: &Entry,
        origin: Origin,
    ) -> Result<impl Future<Output = Result<u64, AppendError>> + Send + use<>, AppendError> {
        let mut headers = HeaderMap::new();
        let o = format!("{:x}.{:x}", origin.node, origin.request);
        headers.insert(ORIGIN_HEADER, o.as_str());
        let payload = Bytes::from(entry.encode_to_vec());
        // While NATS is away the client buffers publishes, and waits once its buffer is full:
        // a change it cannot even send in time is unavailable too.
        let sending = self.js.publish_with_headers(SUBJECT, headers, payload);
        let ack = tokio::time::timeout(ACK_TIMEOUT, sending)
            .await
            .map_err(|_| {
                AppendError::Unavailable(format!(
                    "NATS did not take the change within {ACK_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| classify(&e))?;
        Ok(async move {
            match ack.await {
                Ok(ack) => Ok(ack.sequence),
                Err(e) => Err(classify(&e)),
            }
        })
    }

    /// The entry at log position `at` (from any replica).
    pub async fn get(&self, at: u64) -> Result<Logged, ClusterError> {
        let m =
            self.stream.direct_get(at).await.map_err(|e| {
                ClusterError::Unavailable(format!("reading log position {at}: {e}"))
            })?;
        decode(&m.headers, &m.payload, m.sequence)
    }

    /// The stream's state and placement (its leader among them), from the stream leader.
    pub async fn stream_info(&self) -> Result<stream::Info, ClusterError> {
        self.stream
            .get_info()
            .await
            .map_err(|e| ClusterError::Unavailable(format!("reading {STREAM}'s state: {e}")))
    }

    /// The log's last position (0 when empty), from the stream leader.
    pub async fn last_position(&self) -> Result<u64, ClusterError> {
        Ok(self.stream_info().await?.state.last_sequence)
    }

    /// Every entry after log position `after`, in log order, for as long as the stream is
    /// read (JetStream's ordered consumer: it recreates itself after a gap or missed
    /// heartbeats, from the last position it delivered). Ends with an error the caller
    /// answers by tailing again from its own last applied position.
    pub async fn tail(
        &self,
        after: u64,
    ) -> Result<impl Stream<Item = Result<Logged, ClusterError>> + Send + use<>, ClusterError> {
        use jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::Unavailable(format!("following {STREAM}: {e}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| ClusterError::Unavailable(format!("following {STREAM}: {e}")))?;
        Ok(messages.map(|m| {
            let m = m.map_err(|e| ClusterError::Unavailable(format!("following {STREAM}: {e}")))?;
            let at = m
                .info()
                .map_err(|e| {
                    ClusterError::Unavailable(format!("a message without its position: {e}"))
                })?
                .stream_sequence;
            decode(m.headers.as_ref().unwrap_or(&HeaderMap::new()), &m.payload, at)
        }))
    }
}

/// What a refused publish means for the caller.
fn classify(e: &jetstream::context::PublishError) -> AppendError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => AppendError::Refused(e.to_string()),
        // "No responders": the stream was opened at start, so its leader is gone for the
        // moment (an election, a lost quorum), not the stream. Anything else (timeouts,
        // "temporarily unavailable", a lost connection): the client retries.
        _ => AppendError::Unavailable(e.to_string()),
    }
}

/// A log entry as a change; one that is not ours is an error (the view must not guess).
fn decode(headers: &HeaderMap, payload: &[u8], at: u64) -> Result<Logged, ClusterError> {
    let bad = |why: String| ClusterError::Corrupt(format!("log position {at}: {why}"));
    let entry = Entry::decode(payload).map_err(|e| bad(format!("not a change: {e}")))?;
    if entry.op.is_none() {
        return Err(bad(
            "an entry of a kind this edgechat does not know (a newer node wrote it?)".into()
        ));
    }
    let origin = headers.get(ORIGIN_HEADER).and_then(|v| {
        let (node, request) = v.as_str().split_once('.')?;
        Some(Origin {
            node: u64::from_str_radix(node, 16).ok()?,
            request: u64::from_str_radix(request, 16).ok()?,
        })
    });
    Ok(Logged { at, origin, entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_an_unknown_kind_stops_the_view_instead_of_being_skipped() {
        let unknown = Entry { op: None }.encode_to_vec();
        let e = decode(&HeaderMap::new(), &unknown, 9).unwrap_err();
        assert!(matches!(e, ClusterError::Corrupt(ref m) if m.contains("position 9")), "{e}");
        assert!(decode(&HeaderMap::new(), b"\xff\xff", 3).is_err());
    }

    #[test]
    fn the_origin_header_round_trips() {
        let entry = Entry {
            op: Some(crate::change::Op::LastSeen(crate::presence::LastSeen {
                user_id: "u1".into(),
                now_ms: 5,
            })),
        };
        let mut h = HeaderMap::new();
        h.insert(ORIGIN_HEADER, "ff.a");
        let l = decode(&h, &entry.encode_to_vec(), 4).unwrap();
        assert_eq!(l.origin, Some(Origin { node: 255, request: 10 }));
        assert_eq!(l.entry, entry);
    }
}
