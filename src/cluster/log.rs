//! The room event log on NATS JetStream (SCALE-OUT.md E1, E2): one stream, `EC_EVENTS`, one
//! subject per room, `ec.room.<room id>`. JetStream numbers the whole stream; the room seq is
//! ours, assigned by the writing node and carried in the `Ec-Seq` header. A node appends with
//! `Nats-Expected-Last-Subject-Sequence` set to the log position of the room's last event as
//! its view holds it, so an append decided on stale state is refused (`Conflict`), never
//! stored: two nodes can never give two events one seq, and no seq is skipped.
//! `Nats-Msg-Id` (sender + client_message_id for sends) makes a retried append a duplicate
//! within the 25 h window instead of a second message.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, ErrorCode, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use prost::Message as _;

use super::ClusterError;
use crate::proto::RoomEvent;
use crate::store::cluster::Position;

/// The stream's name.
pub const STREAM: &str = "EC_EVENTS";
/// The header carrying the room seq.
pub const SEQ_HEADER: &str = "Ec-Seq";
/// At least the idempotency promise (API.md: 24 h) plus an hour of clock and retry slack.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(25 * 3600);
/// How long an append waits for JetStream's ack before it is "unavailable" (and retried by
/// the caller with the same message id). The client's default is 5 s, which is also how long
/// every append in flight to a killed leader would stall.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Events per atomic batch: JetStream's limit (ADR-50).
pub const MAX_BATCH: usize = 1000;
/// Events are small (text is capped far below this); a bigger one is a bug, refused by NATS.
pub const MAX_EVENT_BYTES: i32 = 64 * 1024;

/// The subject of a room's events. Room ids are `r` + hex (`store::new_id`): one NATS token.
pub fn subject(room_id: &str) -> String {
    format!("ec.room.{room_id}")
}

/// The stream as edgechat creates it. `replicas` is 3 in production (survives one server);
/// the tests of a single server use 1.
pub fn stream_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec!["ec.room.*".into()],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        duplicate_window: DUPLICATE_WINDOW,
        max_message_size: MAX_EVENT_BYTES,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        description: Some("edgechat room events: the cluster's source of truth".into()),
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
        return Some("allow_direct is false: nodes read events back with direct gets".into());
    }
    if !c.allow_atomic_publish {
        return Some(
            "allow_atomic_publish is false: a room's pending sends go as one batch".into(),
        );
    }
    if matches!(c.persist_mode, Some(stream::PersistenceMode::Async)) {
        return Some("persist_mode is async: acks would come before the write is stored".into());
    }
    if c.mirror.is_some() || c.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Some("the stream mirrors or sources another: appends would not be checked".into());
    }
    None
}

/// One event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The event, its `seq` from the `Ec-Seq` header.
    pub event: RoomEvent,
    /// Its position in the log (stream sequence).
    pub at: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The room seq of the event as stored (for a duplicate: the original's).
    pub seq: u64,
    /// Its log position.
    pub at: u64,
    /// The message id was already in the log: nothing new was stored.
    pub duplicate: bool,
}

/// Why an append was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The room has moved on since `expect` (another node appended): catch up and decide
    /// again.
    #[error("room {room} has events after log position {expected} (or one is being applied)")]
    Conflict {
        /// The room.
        room: String,
        /// The log position the append expected to be the room's last.
        expected: u64,
        /// JetStream refused because another compare-and-set on the room was still being
        /// applied (error 10164), which happens even to a single writer whose previous
        /// append was acknowledged a moment ago: the room may not have moved at all, so
        /// retry (after a moment) rather than assume someone else wrote.
        busy: bool,
    },
    /// NATS did not answer or has no quorum: retry later with the same message id.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// Refused for good (too big, stream missing): a bug or a misconfiguration.
    #[error("the event log refused the event: {0}")]
    Refused(String),
}

/// The JetStream event log.
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
        // answered "unavailable" then, and retried with the same message id.
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

    /// Appends `event` to its room as seq `expect.seq + 1`, provided the room's last event in
    /// the log is still the one at `expect.at` (compare-and-set). `msg_id` deduplicates
    /// retries. Returns once JetStream has acknowledged (a quorum stored it; with
    /// `sync_interval: always` on disk).
    pub async fn append(
        &self,
        event: &RoomEvent,
        expect: Position,
        msg_id: Option<&str>,
    ) -> Result<Appended, AppendError> {
        let seq = expect.seq + 1;
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(with_seq(event, seq).encode_to_vec()))
            .header(SEQ_HEADER, seq.to_string().as_str())
            .expected_last_subject_sequence(expect.at);
        if let Some(id) = msg_id {
            publish = publish.message_id(id);
        }
        let ack = match self.js.send_publish(subject(&event.room_id), publish).await {
            Ok(future) => future.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) if ack.duplicate => {
                let original = self.get(ack.sequence).await.map_err(|e| unavailable(&e))?;
                Ok(Appended { seq: original.event.seq, at: ack.sequence, duplicate: true })
            }
            Ok(ack) => Ok(Appended { seq, at: ack.sequence, duplicate: false }),
            Err(e) => Err(classify(&e, &event.room_id, expect)),
        }
    }

    /// Appends `events` (all of one room, at most [`MAX_BATCH`]) as seqs `expect.seq + 1 ..`,
    /// as one atomic batch (ADR-50: stored whole or not at all) whose first entry carries
    /// the compare-and-set, so k pending sends of a room cost one round trip instead of k.
    /// A batch holding a message id already in the log is refused whole by JetStream; then
    /// the events go one by one, so each duplicate gets its original's seq.
    pub async fn append_batch(
        &self,
        events: &[(RoomEvent, Option<String>)],
        expect: Position,
    ) -> Result<Vec<Appended>, AppendError> {
        match events {
            [] => return Ok(Vec::new()),
            [(e, id)] => return Ok(vec![self.append(e, expect, id.as_deref()).await?]),
            _ => {}
        }
        let room = events[0].0.room_id.clone();
        if events.len() > MAX_BATCH || events.iter().any(|(e, _)| e.room_id != room) {
            return Err(AppendError::Refused(format!(
                "a batch is at most {MAX_BATCH} events of one room"
            )));
        }
        let batch_id = crate::store::new_id('b');
        let client = self.js.client();
        let last = events.len() - 1;
        let mut ack = None;
        for (i, (event, msg_id)) in events.iter().enumerate() {
            let seq = expect.seq + 1 + i as u64;
            let mut headers = HeaderMap::new();
            headers.insert(SEQ_HEADER, seq.to_string().as_str());
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            if i == 0 {
                headers
                    .insert("Nats-Expected-Last-Subject-Sequence", expect.at.to_string().as_str());
            }
            if let Some(id) = msg_id {
                headers.insert("Nats-Msg-Id", id.as_str());
            }
            let payload = Bytes::from(with_seq(event, seq).encode_to_vec());
            if i < last {
                client
                    .publish_with_headers(subject(&room), headers, payload)
                    .await
                    .map_err(|e| unavailable(&e))?;
                continue;
            }
            headers.insert("Nats-Batch-Commit", "1");
            let publish =
                jetstream::message::PublishMessage::build().payload(payload).headers(headers);
            ack = Some(match self.js.send_publish(subject(&room), publish).await {
                Ok(future) => future.await,
                Err(e) => Err(e),
            });
        }
        match ack.expect("a batch has a last entry") {
            Ok(ack) => {
                let first_at = ack.sequence + 1 - events.len() as u64;
                Ok((0..events.len() as u64)
                    .map(|i| Appended {
                        seq: expect.seq + 1 + i,
                        at: first_at + i,
                        duplicate: false,
                    })
                    .collect())
            }
            Err(e) if api_code(&e) == Some(BATCH_HAS_DUPLICATE) => {
                let mut expect = expect;
                let mut out = Vec::with_capacity(events.len());
                for (event, msg_id) in events {
                    let a = self.append(event, expect, msg_id.as_deref()).await?;
                    if a.at > expect.at {
                        expect = Position { seq: a.seq, at: a.at };
                    }
                    out.push(a);
                }
                Ok(out)
            }
            Err(e) => Err(classify(&e, &room, expect)),
        }
    }

    /// The event at log position `at` (from any replica).
    pub async fn get(&self, at: u64) -> Result<Logged, ClusterError> {
        let m =
            self.stream.direct_get(at).await.map_err(|e| {
                ClusterError::Unavailable(format!("reading log position {at}: {e}"))
            })?;
        decode(&m.headers, &m.payload, m.sequence)
    }

    /// Where the room's last event is in the log (zeros for a room without events): what a
    /// writer without a view (or with a view behind) expects next.
    pub async fn room_last(&self, room: &str) -> Result<Position, ClusterError> {
        match self.stream.direct_get_last_for_subject(subject(room)).await {
            Ok(m) => {
                let l = decode(&m.headers, &m.payload, m.sequence)?;
                Ok(Position { seq: l.event.seq, at: l.at })
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(Position::default()),
            Err(e) => Err(ClusterError::Unavailable(format!("reading room {room}: {e}"))),
        }
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
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| ClusterError::Unavailable(format!("reading {STREAM}'s state: {e}")))?;
        Ok(info.state.last_sequence)
    }

    /// The room's events after room seq `after`, at most `limit`, by walking the room's
    /// subject (one direct get per event from the room's first). For rebuilding and
    /// checking a view, not for serving: the view answers History.
    pub async fn range(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Logged>, ClusterError> {
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let m = match self.stream.direct_get_next_for_subject(subject(room), Some(from)).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => {
                    return Err(ClusterError::Unavailable(format!("reading room {room}: {e}")));
                }
            };
            let logged = decode(&m.headers, &m.payload, m.sequence)?;
            from = m.sequence + 1;
            if logged.event.seq > after {
                out.push(logged);
            }
        }
        Ok(out)
    }

    /// Every event after log position `after`, in log order, for as long as the stream is
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

/// The event as stored at room seq `seq`.
fn with_seq(event: &RoomEvent, seq: u64) -> RoomEvent {
    let mut stored = event.clone();
    stored.seq = seq;
    if let Some(crate::proto::room_event::Kind::Message(m)) = &mut stored.kind {
        m.seq = seq;
    }
    stored
}

fn unavailable(e: &dyn std::fmt::Display) -> AppendError {
    AppendError::Unavailable(e.to_string())
}

/// JetStream's API error code behind a publish error, if it was one.
fn api_code(e: &jetstream::context::PublishError) -> Option<ErrorCode> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(|j| j.error_code())
}

/// "Batch publish contains duplicate message id" (ADR-50).
const BATCH_HAS_DUPLICATE: ErrorCode = ErrorCode(10201);

/// What a refused publish means for the caller.
fn classify(e: &jetstream::context::PublishError, room: &str, expect: Position) -> AppendError {
    let conflict =
        |busy| AppendError::Conflict { room: room.to_string(), expected: expect.at, busy };
    match e.kind() {
        PublishErrorKind::WrongLastSequence => conflict(false),
        // Another append to the room is in flight (JetStream refuses a second
        // compare-and-set on a subject until the first is applied): the room is moving on,
        // so this is a conflict too.
        PublishErrorKind::Other
            if api_code(e) == Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) =>
        {
            conflict(true)
        }
        PublishErrorKind::MaxPayloadExceeded => AppendError::Refused(e.to_string()),
        // "No responders": the stream was opened at start, so its leader is gone for the
        // moment (an election, a lost quorum), not the stream.
        PublishErrorKind::StreamNotFound => unavailable(e),
        // Anything else (timeouts, "temporarily unavailable", a lost connection): the
        // caller retries with the same message id.
        _ => unavailable(e),
    }
}

/// A log entry as an event, its seq from the header; an entry that is not one of ours is an
/// error (the view must not guess).
fn decode(headers: &HeaderMap, payload: &[u8], at: u64) -> Result<Logged, ClusterError> {
    let bad = |why: String| ClusterError::Corrupt(format!("log position {at}: {why}"));
    let seq: u64 = headers
        .get(SEQ_HEADER)
        .ok_or_else(|| bad(format!("no {SEQ_HEADER} header")))?
        .as_str()
        .parse()
        .map_err(|e| bad(format!("{SEQ_HEADER}: {e}")))?;
    let mut event = RoomEvent::decode(payload).map_err(|e| bad(format!("not a RoomEvent: {e}")))?;
    if event.seq != seq {
        return Err(bad(format!("{SEQ_HEADER} {seq} but the event says {}", event.seq)));
    }
    event.seq = seq;
    Ok(Logged { event, at })
}
