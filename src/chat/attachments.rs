//! `AttachmentService`: uploads in unary chunks (each a change, durable before it is
//! answered), the attachments they become, who may see one, and reading it back.
//!
//! The rules (docs/protocol.md "Attachments"): an upload declares name, size and SHA-256;
//! chunks come in order and a retried chunk changes nothing; the chunk that completes the file
//! is checked against the hash in the same change that makes it an attachment, so a file that
//! lies about itself is dropped whole and nothing of it stays. An attachment is seen by its
//! uploader and by whoever may `Download` in a room where a live message carries it
//! (`permissions::may`); everyone else is told `NOT_FOUND`, as for an id that never existed.

use std::sync::Arc;

use sha2::Digest;

use super::messages::{ChatError, job};
use super::ratelimit::Budget;
use crate::attachments::{self as rules, Links};
use crate::auth::Principal;
use crate::change::{Caller, Change, Exec};
use crate::config::AttachmentsConfig;
use crate::proto;
use crate::rooms::permissions::{self, Action};
use crate::rooms::service::{check_current, facts, load};
use crate::store::{self, AttachmentRecord, JobResult, Snapshot, WriteCtx, attachments};

/// Bytes of an upload per change in cluster mode, under the log's 64 KiB entry limit with
/// room for the rest of the change.
const LOG_PIECE_BYTES: usize = 48 << 10;

/// An attachment's bytes as `(offset, chunk)` ([`Attachments::open`]).
pub type Chunks = futures_util::stream::BoxStream<'static, Result<(u64, Vec<u8>), ChatError>>;

/// The message of every refusal to show an attachment: the same whether it exists or not.
const NOT_FOUND: &str = "attachment not found";

/// The attachment service. Cheap to clone.
#[derive(Clone)]
pub struct Attachments {
    store: store::Store,
    exec: Exec,
    config: AttachmentsConfig,
    links: Arc<Links>,
    /// The per-user budget of every change but sends: each `StartUpload` spends from it, so
    /// a client that uploads files with a wrong hash (deleted at once, freeing its quota)
    /// cannot make the server write without bound. Chunks are bounded by the quota.
    budget: Budget,
    /// Chunks being stored, whose bytes the server holds meanwhile.
    in_flight: Arc<InFlight>,
}

/// Chunks being stored at once, all users together; past it a chunk is refused at once with
/// `RESOURCE_EXHAUSTED` (its buffer dropped), and the client retries. 64 x 256 KiB = 16 MiB.
const MAX_CHUNKS_IN_FLIGHT: usize = 64;
/// ... and per user: a client sends one chunk after another, so more is a client that
/// pipelines or floods.
const MAX_CHUNKS_IN_FLIGHT_PER_USER: u32 = 4;

/// Who has chunks in flight (the map holds only users with one, at most
/// [`MAX_CHUNKS_IN_FLIGHT`] entries).
#[derive(Default)]
struct InFlight {
    per_user: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// A chunk in flight; counted out when dropped.
struct ChunkSlot {
    of: Arc<InFlight>,
    user: String,
}

impl InFlight {
    fn take(self: &Arc<Self>, user: &str) -> Result<ChunkSlot, ChatError> {
        let mut m = self.per_user.lock().expect("in-flight lock");
        let total: u32 = m.values().sum();
        let mine = m.get(user).copied().unwrap_or(0);
        if total as usize >= MAX_CHUNKS_IN_FLIGHT {
            return Err(ChatError::ResourceExhausted(
                "the server is storing as many chunks as it takes at once; retry in a moment"
                    .into(),
            ));
        }
        if mine >= MAX_CHUNKS_IN_FLIGHT_PER_USER {
            return Err(ChatError::ResourceExhausted(format!(
                "{mine} of your chunks are being stored; send the next when one is answered"
            )));
        }
        m.insert(user.to_string(), mine + 1);
        Ok(ChunkSlot { of: self.clone(), user: user.to_string() })
    }
}

impl Drop for ChunkSlot {
    fn drop(&mut self) {
        let mut m = self.of.per_user.lock().expect("in-flight lock");
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

impl Attachments {
    /// The service; download links are signed with a key made here.
    pub fn new(
        store: store::Store,
        exec: Exec,
        config: AttachmentsConfig,
        budget: Budget,
    ) -> Attachments {
        Attachments {
            store,
            exec,
            config,
            links: Arc::new(Links::default()),
            budget,
            in_flight: Default::default(),
        }
    }

    fn keep_ms(&self) -> i64 {
        self.config.unposted.as_millis().min(i64::MAX as u128) as i64
    }

    /// `StartUpload`.
    pub async fn start(
        &self,
        who: &Principal,
        r: &proto::StartUploadRequest,
        now_ms: i64,
    ) -> Result<proto::Upload, ChatError> {
        rules::check_name(&r.name).map_err(ChatError::InvalidArgument)?;
        if r.size == 0 {
            return Err(ChatError::InvalidArgument("size is 0: there is nothing to upload".into()));
        }
        if r.size > self.config.max_bytes {
            return Err(ChatError::ResourceExhausted(format!(
                "the file is {} bytes; this server takes files of at most {} bytes",
                r.size, self.config.max_bytes
            )));
        }
        if r.sha256.len() != 32 {
            return Err(ChatError::InvalidArgument(format!(
                "sha256 is {} bytes; a SHA-256 is 32",
                r.sha256.len()
            )));
        }
        self.budget.take(&who.user_id, now_ms).map_err(ChatError::ResourceExhausted)?;
        let change = StartUpload {
            who: Some(who.into()),
            id: store::new_id('f'),
            name: r.name.clone(),
            size: r.size,
            sha256: r.sha256.clone(),
            now_ms,
            per_user_bytes: self.config.per_user_bytes,
        };
        let (id, rec) = self.exec.run(change).await?;
        Ok(upload_of(&id, &rec, self.keep_ms()))
    }

    /// `UploadChunk`.
    pub async fn chunk(
        &self,
        who: &Principal,
        r: proto::UploadChunkRequest,
        now_ms: i64,
    ) -> Result<proto::Upload, ChatError> {
        if r.data.len() > rules::MAX_CHUNK_BYTES {
            return Err(ChatError::InvalidArgument(format!(
                "the chunk is {} bytes; at most {} a chunk",
                r.data.len(),
                rules::MAX_CHUNK_BYTES
            )));
        }
        // Decided first on a snapshot: a retry of a stored chunk (its answer lost) is answered
        // from it, and a chunk the change would refuse never becomes a change (in cluster
        // mode, a log entry kept forever). The change decides again.
        {
            let tx = self.store.read()?;
            check_current(&tx, who)?;
            let rec = owned_upload(&tx, who, &r.upload_id)?;
            if let Step::AsItIs = step(&rec, &r.upload_id, r.offset, r.data.len())? {
                return Ok(upload_of(&r.upload_id, &rec, self.keep_ms()));
            }
        }
        let _slot = self.in_flight.take(&who.user_id)?;
        // In cluster mode a change is a log entry of at most 64 KiB: a chunk goes as several
        // changes, in order. If one fails the client sends the chunk again, and what was
        // stored already is skipped (`PutChunk` stores only the bytes past `received`).
        let piece = if self.exec.is_cluster() { LOG_PIECE_BYTES } else { rules::MAX_CHUNK_BYTES };
        let mut offset = r.offset;
        let mut last = None;
        for data in r.data.chunks(piece.max(1)) {
            let change = PutChunk {
                who: Some(who.into()),
                id: r.upload_id.clone(),
                offset,
                data: data.to_vec(),
                now_ms,
            };
            offset = offset.saturating_add(data.len() as u64);
            match self.exec.run(change).await? {
                Chunked::Stored(rec) => last = Some(rec),
                Chunked::Mismatch(why) => return Err(ChatError::InvalidArgument(why)),
            }
        }
        // No pieces: empty data, which the snapshot check refused already (or answered, for a
        // finished upload).
        let rec = last.ok_or_else(|| ChatError::InvalidArgument("data is empty".into()))?;
        Ok(upload_of(&r.upload_id, &rec, self.keep_ms()))
    }

    /// `GetUpload`: one of the caller's uploads, finished or not.
    pub fn upload(&self, who: &Principal, id: &str) -> Result<proto::Upload, ChatError> {
        let tx = self.store.read()?;
        check_current(&tx, who)?;
        match attachments::get(&tx, id)? {
            Some(rec) if rec.owner_id == who.user_id => Ok(upload_of(id, &rec, self.keep_ms())),
            _ => Err(ChatError::NotFound(format!("upload {id} not found"))),
        }
    }

    /// `GetAttachment`: the attachment and a download link for this caller.
    pub fn access(
        &self,
        who: &Principal,
        id: &str,
        now_ms: i64,
    ) -> Result<proto::AttachmentAccess, ChatError> {
        let tx = self.store.read()?;
        check_current(&tx, who)?;
        let rec = visible(&tx, who, id)?;
        let expires = now_ms + rules::LINK_TTL_MS;
        Ok(proto::AttachmentAccess {
            attachment: Some(attachment_of(id, &rec)),
            download_path: self.links.path(&who.user_id, who.token_version, id, expires),
            download_expires_at_ms: expires,
        })
    }

    /// Up to `MAX_CHUNK_BYTES` of attachment `id` from `offset`, if the caller may see it.
    /// With its record.
    fn read(
        &self,
        who: &Principal,
        id: &str,
        offset: u64,
    ) -> Result<(AttachmentRecord, Vec<u8>), ChatError> {
        let tx = self.store.read()?;
        check_current(&tx, who)?;
        let rec = visible(&tx, who, id)?;
        let bytes = attachments::read(&tx, &rec.sha256, offset, rules::MAX_CHUNK_BYTES)?;
        Ok((rec, bytes))
    }

    /// Attachment `id` from `offset` for `who`: its record, and its bytes as a stream of
    /// `(offset, chunk)` of at most `MAX_CHUNK_BYTES`. The first chunk is read here, so a
    /// refusal (`NOT_FOUND`) comes before any stream; each later one is read when the stream
    /// is polled, from a fresh snapshot with the permission asked again (a ban ends a download
    /// in progress), so a slow reader holds one chunk and no read transaction. The stream
    /// ends after the last byte, or after yielding an error.
    pub fn open(
        &self,
        who: &Principal,
        id: &str,
        offset: u64,
    ) -> Result<(AttachmentRecord, Chunks), ChatError> {
        let (rec, first) = self.read(who, id, offset)?;
        let (svc, who, id, size) = (self.clone(), who.clone(), id.to_string(), rec.size);
        let chunks = futures_util::stream::unfold((offset, Some(first)), move |(offset, ready)| {
            let (svc, who, id) = (svc.clone(), who.clone(), id.clone());
            async move {
                if offset >= size {
                    return None;
                }
                let data = match ready {
                    Some(d) => d,
                    None => match svc.read(&who, &id, offset) {
                        Ok((_, d)) => d,
                        Err(e) => return Some((Err(e), (size, None))),
                    },
                };
                if data.is_empty() {
                    return None;
                }
                let next = offset + data.len() as u64;
                Some((Ok((offset, data)), (next, None)))
            }
        });
        Ok((rec, futures_util::StreamExt::boxed(chunks)))
    }

    /// The user a download link `t` for `id` was given to, as they are now, if the link is
    /// good at `now_ms` and they may still see the attachment; `None` otherwise.
    pub fn link_user(&self, id: &str, t: &str, now_ms: i64) -> Option<Principal> {
        let (user_id, version) = self.links.check(id, t, now_ms)?;
        let tx = self.store.read().ok()?;
        let user = store::users::user(&tx, &user_id).ok()??;
        if user.disabled || user.token_version != version {
            return None;
        }
        let role = crate::auth::accounts::role_from_proto(user.role)?;
        let who = Principal {
            user_id: user.id,
            username: user.username,
            role,
            expires_at_ms: now_ms,
            token_version: user.token_version,
        };
        visible(&tx, &who, id).ok()?;
        Some(who)
    }
}

/// The attachment `id` if `who` may see it: theirs, or carried by a live message of a room
/// where `permissions::may(Download)`. Anything else is `NOT_FOUND`.
fn visible(s: &impl Snapshot, who: &Principal, id: &str) -> Result<AttachmentRecord, ChatError> {
    let not_found = || ChatError::NotFound(NOT_FOUND.into());
    let rec = attachments::get(s, id)?.filter(|r| r.finished_at_ms != 0).ok_or_else(not_found)?;
    if rec.owner_id == who.user_id {
        return Ok(rec);
    }
    for room in attachments::rooms(s, id)? {
        let Ok(l) = load(s, who, &room) else { continue };
        if permissions::may(l.actor, Action::Download, facts(&l.room)).is_ok() {
            return Ok(rec);
        }
    }
    Err(not_found())
}

/// The wire form of an attachment.
pub fn attachment_of(id: &str, rec: &AttachmentRecord) -> proto::Attachment {
    proto::Attachment {
        id: id.to_string(),
        name: rec.name.clone(),
        size: rec.size,
        media_type: rec.media_type.clone(),
        sha256: rec.sha256.clone(),
        width: rec.width,
        height: rec.height,
        uploader_id: rec.owner_id.clone(),
        uploaded_at_ms: rec.finished_at_ms,
    }
}

fn upload_of(id: &str, rec: &AttachmentRecord, keep_ms: i64) -> proto::Upload {
    proto::Upload {
        upload_id: id.to_string(),
        size: rec.size,
        received: rec.received,
        attachment: (rec.finished_at_ms != 0).then(|| attachment_of(id, rec)),
        expires_at_ms: if rec.idle_since_ms == 0 { 0 } else { rec.idle_since_ms + keep_ms },
    }
}

/// Inside a `Post`: the sender's finished attachments `ids`, checked (before anything is
/// written), as the message will carry them.
pub(super) fn resolve(
    s: &impl Snapshot,
    sender: &str,
    ids: &[String],
) -> Result<Vec<(AttachmentRecord, proto::Attachment)>, ChatError> {
    check_ids(ids)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let rec = attachments::get(s, id)?
            .filter(|r| r.owner_id == sender)
            .ok_or_else(|| ChatError::NotFound(format!("attachment {id} not found")))?;
        if rec.finished_at_ms == 0 {
            return Err(ChatError::FailedPrecondition(format!(
                "upload {id} is not finished ({} of {} bytes): send the rest first",
                rec.received, rec.size
            )));
        }
        let wire = attachment_of(id, &rec);
        out.push((rec, wire));
    }
    Ok(out)
}

/// Checks a message's attachment ids before its change is made: at most
/// [`rules::MAX_PER_MESSAGE`], each once, none empty.
pub fn check_ids(ids: &[String]) -> Result<(), ChatError> {
    if ids.len() > rules::MAX_PER_MESSAGE {
        return Err(ChatError::InvalidArgument(format!(
            "{} attachments; a message carries at most {}",
            ids.len(),
            rules::MAX_PER_MESSAGE
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() {
            return Err(ChatError::InvalidArgument("an attachment id is empty".into()));
        }
        if ids[..i].contains(id) {
            return Err(ChatError::InvalidArgument(format!("attachment {id} is given twice")));
        }
    }
    Ok(())
}

/// Removes up to `limit` attachments and unfinished uploads that no message has carried
/// since `cutoff_ms` (inside `retention::Prune`). Returns how many went.
pub fn collect(
    ctx: &mut WriteCtx<'_>,
    cutoff_ms: i64,
    limit: usize,
) -> Result<u64, store::StoreError> {
    let ids = attachments::idle_until(&**ctx, cutoff_ms, limit)?;
    for id in &ids {
        if let Some(rec) = attachments::get(&**ctx, id)? {
            attachments::remove(ctx, id, &rec)?;
        }
    }
    Ok(ids.len() as u64)
}

/// Change: `StartUpload`. Answers the caller's unfinished upload of the same file if there is
/// one (a retry whose answer was lost), else a new one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StartUpload {
    /// The uploader.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The new upload's id (unused when an earlier one is answered).
    #[prost(string, tag = "2")]
    pub id: String,
    /// Name (checked before the change was made).
    #[prost(string, tag = "3")]
    pub name: String,
    /// Declared size (checked).
    #[prost(uint64, tag = "4")]
    pub size: u64,
    /// Declared SHA-256 (checked).
    #[prost(bytes = "vec", tag = "5")]
    pub sha256: Vec<u8>,
    /// Now.
    #[prost(int64, tag = "6")]
    pub now_ms: i64,
    /// `[attachments] per_user_bytes`.
    #[prost(uint64, tag = "7")]
    pub per_user_bytes: u64,
}

impl Change for StartUpload {
    type T = (String, AttachmentRecord);
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(String, AttachmentRecord), ChatError> {
        let who = self.who.unwrap_or_default().principal();
        job((|| {
            check_current(&**ctx, &who)?;
            let open = attachments::open_uploads(&**ctx, &who.user_id)?;
            for id in &open {
                if let Some(r) = attachments::get(&**ctx, id)?
                    && r.name == self.name
                    && r.size == self.size
                    && r.sha256 == self.sha256
                {
                    return Ok((id.clone(), r));
                }
            }
            if open.len() >= rules::MAX_OPEN_UPLOADS {
                return Err(ChatError::ResourceExhausted(format!(
                    "you have {} unfinished uploads; finish one, or let it expire, first",
                    open.len()
                )));
            }
            let used = attachments::usage(&**ctx, &who.user_id)?;
            if used.saturating_add(self.size) > self.per_user_bytes {
                return Err(ChatError::ResourceExhausted(format!(
                    "your uploads and attachments take {used} bytes; {} more would pass your \
                     {} bytes (unposted ones are deleted after a while)",
                    self.size, self.per_user_bytes
                )));
            }
            let rec = AttachmentRecord {
                owner_id: who.user_id.clone(),
                name: self.name,
                size: self.size,
                sha256: self.sha256,
                created_at_ms: self.now_ms,
                idle_since_ms: self.now_ms.max(1),
                ..Default::default()
            };
            attachments::create(ctx, &self.id, &rec)?;
            Ok((self.id, rec))
        })())
    }
}

/// The caller's upload `id` (finished or not); anyone else's is `NOT_FOUND`.
fn owned_upload(
    s: &impl Snapshot,
    who: &Principal,
    id: &str,
) -> Result<AttachmentRecord, ChatError> {
    attachments::get(s, id)?
        .filter(|r| r.owner_id == who.user_id)
        .ok_or_else(|| ChatError::NotFound(format!("upload {id} not found")))
}

/// What a chunk of `len` bytes at `offset` does to upload `id` as `rec` stands.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing: a retry of bytes stored already (its answer was lost), or the upload is
    /// finished.
    AsItIs,
    /// Store the chunk's bytes from `skip` on at `offset` (a chunk sent again over what is
    /// stored, after a partial store, adds only its new bytes; the hash checks the rest).
    Store {
        /// Where they go: the upload's `received`.
        offset: u64,
        /// Bytes of the chunk already stored.
        skip: usize,
    },
}

/// The chunk rules, the same for the service's snapshot check and the change (pure).
fn step(rec: &AttachmentRecord, id: &str, offset: u64, len: usize) -> Result<Step, ChatError> {
    let end = offset.saturating_add(len as u64);
    if rec.finished_at_ms != 0 || (len != 0 && end <= rec.received) {
        return Ok(Step::AsItIs);
    }
    if len == 0 {
        return Err(ChatError::InvalidArgument("data is empty".into()));
    }
    if offset > rec.received {
        return Err(ChatError::FailedPrecondition(format!(
            "upload {id} has {} of {} bytes: send the chunk at offset {}",
            rec.received, rec.size, rec.received
        )));
    }
    if end > rec.size {
        return Err(ChatError::InvalidArgument(format!(
            "the chunk ends at byte {end}, past the declared size of {} bytes",
            rec.size
        )));
    }
    Ok(Step::Store { offset: rec.received, skip: (rec.received - offset) as usize })
}

/// What a chunk did.
pub enum Chunked {
    /// Stored (or already there): the upload as it is now.
    Stored(AttachmentRecord),
    /// It completed a file that is not what was declared: the upload is gone. Why.
    Mismatch(String),
}

/// Change: `UploadChunk`: stores a chunk; the last one also checks the file and makes it an
/// attachment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutChunk {
    /// The uploader.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The upload.
    #[prost(string, tag = "2")]
    pub id: String,
    /// Where `data` goes.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    /// The bytes (at most `MAX_CHUNK_BYTES`, checked).
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    /// Now.
    #[prost(int64, tag = "5")]
    pub now_ms: i64,
}

impl Change for PutChunk {
    type T = Chunked;
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<Chunked, ChatError> {
        let who = self.who.unwrap_or_default().principal();
        job((|| {
            check_current(&**ctx, &who)?;
            let id = self.id.as_str();
            let rec = owned_upload(&**ctx, &who, id)?;
            let (offset, data) = match step(&rec, id, self.offset, self.data.len())? {
                Step::AsItIs => return Ok(Chunked::Stored(rec)),
                Step::Store { offset, skip } => (offset, &self.data[skip..]),
            };
            let end = offset + data.len() as u64;
            let now = self.now_ms.max(1);
            let next = AttachmentRecord { received: end, idle_since_ms: now, ..rec.clone() };
            if end < rec.size {
                attachments::put_chunk(ctx, id, &rec, &next, offset, data)?;
                return Ok(Chunked::Stored(next));
            }
            // The last chunk: the whole file is here; is it the one declared?
            // sha2, which uses the CPU's SHA extensions where it has them (ring's was slower
            // here: the last chunk took 30 ms instead of 22 for 10 MiB).
            let mut hash = sha2::Sha256::new();
            let mut head = Vec::new();
            let mut take = |b: &[u8]| {
                hash.update(b);
                let room = rules::SNIFF_BYTES.saturating_sub(head.len());
                head.extend_from_slice(&b[..room.min(b.len())]);
            };
            attachments::upload_bytes(&**ctx, id, &mut take)?;
            take(data);
            let got: [u8; 32] = hash.finalize().into();
            let got = got.as_slice();
            if got != rec.sha256.as_slice() {
                attachments::remove(ctx, id, &rec)?;
                return Ok(Chunked::Mismatch(format!(
                    "the file's SHA-256 is {}, not the declared {}: the upload is dropped; \
                     start it again",
                    rules::hex(got),
                    rules::hex(&rec.sha256)
                )));
            }
            let d = rules::describe(&head, &rec.name);
            let done = AttachmentRecord {
                finished_at_ms: now,
                media_type: d.media_type,
                width: d.width,
                height: d.height,
                ..next.clone()
            };
            attachments::put_chunk(ctx, id, &rec, &next, offset, data)?;
            attachments::finish(ctx, id, &next, &done)?;
            Ok(Chunked::Stored(done))
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_steps() {
        let rec = AttachmentRecord { size: 100, received: 40, ..Default::default() };
        let done = AttachmentRecord { finished_at_ms: 1, received: 100, ..rec.clone() };
        // The step, or the refusal's kind.
        let run = |rec: &AttachmentRecord, offset, len| match step(rec, "f", offset, len) {
            Ok(Step::AsItIs) => "as it is".to_string(),
            Ok(Step::Store { offset, skip }) => format!("store at {offset} from {skip}"),
            Err(ChatError::InvalidArgument(_)) => "invalid".into(),
            Err(ChatError::FailedPrecondition(m)) if m.contains("offset 40") => "from 40".into(),
            Err(e) => panic!("{e}"),
        };
        let table: &[(u64, usize, &str)] = &[
            (40, 10, "store at 40 from 0"),
            (40, 60, "store at 40 from 0"),  // exactly to the end
            (30, 20, "store at 40 from 10"), // overlapping what is stored
            (0, 40, "as it is"),             // a retry
            (10, 5, "as it is"),             // inside what is stored
            (41, 10, "from 40"),
            (u64::MAX, 10, "from 40"),
            (40, 61, "invalid"), // past the size
            (40, 0, "invalid"),  // empty
        ];
        for (offset, len, want) in table {
            assert_eq!(run(&rec, *offset, *len), *want, "{offset} {len}");
        }
        assert_eq!(run(&done, 0, 0), "as it is", "finished: answered as it is");
    }

    #[test]
    fn chunks_in_flight_are_bounded_per_user_and_in_all() {
        let f = Arc::new(InFlight::default());
        let mine: Vec<ChunkSlot> = (0..4).map(|_| f.take("u1").unwrap()).collect();
        assert!(matches!(f.take("u1"), Err(ChatError::ResourceExhausted(_))));
        drop(mine);
        assert!(f.per_user.lock().unwrap().is_empty(), "forgotten at zero");
        let all: Vec<ChunkSlot> =
            (0..MAX_CHUNKS_IN_FLIGHT).map(|i| f.take(&format!("u{}", i / 4)).unwrap()).collect();
        assert!(matches!(f.take("someone"), Err(ChatError::ResourceExhausted(_))));
        drop(all);
        f.take("someone").unwrap();
    }
}
