//! Uploads and the attachments they become, with their bytes stored once per content.
//!
//! Layout (`tables`): `attachments`: id -> `AttachmentRecord`; `upload_chunks`: (id, offset)
//! -> bytes while the upload is unfinished; `blobs`: SHA-256 -> finished attachments with
//! those bytes, and `blob_chunks`: (SHA-256, offset) -> bytes, once per content;
//! `attachment_rooms`: (id, room) -> live messages of the room carrying it (who may see it);
//! `user_uploads`: (user, id) for unfinished uploads (a user's open uploads are bounded);
//! `attachment_usage`: user -> bytes (a user's quota); `attachments_idle`: (since, id) for each
//! attachment no message carries, so collecting the expired ones reads one short range.
//!
//! Why the bytes live in the database file and not in files beside it: DESIGN.md's backup is
//! one file copied while serving, and a snapshot, `AdminService.Backup` and `restore` then
//! cover attachments with nothing added; an upload's chunks and its finishing are writer
//! transactions, so a crash leaves an upload where its last acknowledged chunk left it, never
//! a half-written file or a file without its record. The cost, measured in
//! docs/PERFORMANCE.md: every byte is written twice (chunk, then content), and the file grows
//! with the attachments (operations.md sizes it).

use redb::ReadableTable;

use super::records::AttachmentRecord;
use super::tables::{
    ATTACHMENT_ROOMS, ATTACHMENT_USAGE, ATTACHMENTS, ATTACHMENTS_IDLE, BLOB_CHUNKS, BLOBS,
    UPLOAD_CHUNKS, USER_UPLOADS,
};
use super::{Snapshot, StoreError, decode};

/// Largest value stored in `upload_chunks` and `blob_chunks`: a chunk of an upload is split
/// into pieces of at most this. redb keeps a large value in a leaf of its own, sized to the
/// next power of two: a 256 KiB value with its key and header takes a 512 KiB page, so files
/// took 2.9 bytes of database per byte (docs/PERFORMANCE.md); 1 KiB under 256 KiB leaves
/// room for both.
pub const PIECE_BYTES: usize = (256 << 10) - 1024;

/// The attachment (or unfinished upload) `id`.
pub fn get(s: &impl Snapshot, id: &str) -> Result<Option<AttachmentRecord>, StoreError> {
    match s.table(ATTACHMENTS)?.get(id)? {
        Some(v) => Ok(Some(decode("attachments", v.value())?)),
        None => Ok(None),
    }
}

/// The ids of `user`'s unfinished uploads.
pub fn open_uploads(s: &impl Snapshot, user: &str) -> Result<Vec<String>, StoreError> {
    let t = s.table(USER_UPLOADS)?;
    let mut out = Vec::new();
    for row in t.range((user, "")..)? {
        let (k, _) = row?;
        let (u, id) = k.value();
        if u != user {
            break;
        }
        out.push(id.to_string());
    }
    Ok(out)
}

/// Bytes `user`'s uploads and attachments take (declared sizes).
pub fn usage(s: &impl Snapshot, user: &str) -> Result<u64, StoreError> {
    Ok(s.table(ATTACHMENT_USAGE)?.get(user)?.map_or(0, |v| v.value()))
}

/// The rooms where a live message carries the attachment.
pub fn rooms(s: &impl Snapshot, id: &str) -> Result<Vec<String>, StoreError> {
    let t = s.table(ATTACHMENT_ROOMS)?;
    let mut out = Vec::new();
    for row in t.range((id, "")..)? {
        let (k, _) = row?;
        let (a, room) = k.value();
        if a != id {
            break;
        }
        out.push(room.to_string());
    }
    Ok(out)
}

/// Up to `limit` attachments no message has carried since `cutoff_ms` or before.
pub fn idle_until(
    s: &impl Snapshot,
    cutoff_ms: i64,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let t = s.table(ATTACHMENTS_IDLE)?;
    let mut out = Vec::new();
    for row in t.range(..=(cutoff_ms.max(0) as u64, "\u{10FFFF}"))?.take(limit) {
        out.push(row?.0.value().1.to_string());
    }
    Ok(out)
}

/// Calls `each` with the unfinished upload's bytes in order (chunk by chunk).
pub fn upload_bytes(
    s: &impl Snapshot,
    id: &str,
    mut each: impl FnMut(&[u8]),
) -> Result<(), StoreError> {
    let t = s.table(UPLOAD_CHUNKS)?;
    for row in t.range((id, 0)..=(id, u64::MAX))? {
        each(row?.1.value());
    }
    Ok(())
}

/// Up to `max` bytes of the content `sha256` from `offset` (fewer at its end; none past it).
pub fn read(
    s: &impl Snapshot,
    sha256: &[u8],
    offset: u64,
    max: usize,
) -> Result<Vec<u8>, StoreError> {
    let t = s.table(BLOB_CHUNKS)?;
    let mut out = Vec::new();
    // The chunk holding `offset` starts at or before it: the last key <= offset.
    let start = t.range((sha256, 0)..=(sha256, offset))?.next_back().transpose()?;
    let from = start.map_or(offset, |(k, _)| k.value().1);
    for row in t.range((sha256, from)..=(sha256, u64::MAX))? {
        let (k, v) = row?;
        let (at, bytes) = (k.value().1, v.value());
        let skip = offset.saturating_sub(at) as usize;
        if skip >= bytes.len() {
            continue;
        }
        let take = (max - out.len()).min(bytes.len() - skip);
        out.extend_from_slice(&bytes[skip..skip + take]);
        if out.len() == max {
            break;
        }
    }
    Ok(out)
}

/// Writes the record of attachment `id` (new or changed), keeping the idle index in step with
/// its `idle_since_ms` (`before`: the record as it was, if any).
fn put(
    tx: &redb::WriteTransaction,
    id: &str,
    before: Option<&AttachmentRecord>,
    rec: &AttachmentRecord,
) -> Result<(), StoreError> {
    let mut idle = tx.open_table(ATTACHMENTS_IDLE)?;
    let was = before.map_or(0, |b| b.idle_since_ms);
    if was != rec.idle_since_ms {
        if was != 0 {
            idle.remove((was as u64, id))?;
        }
        if rec.idle_since_ms != 0 {
            idle.insert((rec.idle_since_ms as u64, id), ())?;
        }
    }
    tx.open_table(ATTACHMENTS)?.insert(id, prost::Message::encode_to_vec(rec).as_slice())?;
    Ok(())
}

fn add_usage(tx: &redb::WriteTransaction, user: &str, delta: i64) -> Result<(), StoreError> {
    let mut t = tx.open_table(ATTACHMENT_USAGE)?;
    let now = t.get(user)?.map_or(0, |v| v.value());
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        t.remove(user)?;
    } else {
        t.insert(user, next)?;
    }
    Ok(())
}

/// Records a new upload (`rec.idle_since_ms` set, nothing received) and counts its size
/// against its owner.
pub fn create(
    tx: &redb::WriteTransaction,
    id: &str,
    rec: &AttachmentRecord,
) -> Result<(), StoreError> {
    put(tx, id, None, rec)?;
    tx.open_table(USER_UPLOADS)?.insert((rec.owner_id.as_str(), id), ())?;
    add_usage(tx, &rec.owner_id, rec.size as i64)
}

/// Stores `data` at `offset` of unfinished upload `id` and writes its record as `rec` says
/// (its `received` and `idle_since_ms` moved on by the caller).
pub fn put_chunk(
    tx: &redb::WriteTransaction,
    id: &str,
    before: &AttachmentRecord,
    rec: &AttachmentRecord,
    offset: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    let mut t = tx.open_table(UPLOAD_CHUNKS)?;
    for (i, piece) in data.chunks(PIECE_BYTES).enumerate() {
        t.insert((id, offset + (i * PIECE_BYTES) as u64), piece)?;
    }
    drop(t);
    put(tx, id, Some(before), rec)
}

/// Turns unfinished upload `id`, whose bytes were checked, into an attachment as `rec` says:
/// its chunks become the content's (unless the content is stored already: then they are
/// dropped), and the content counts one more attachment.
pub fn finish(
    tx: &redb::WriteTransaction,
    id: &str,
    before: &AttachmentRecord,
    rec: &AttachmentRecord,
) -> Result<(), StoreError> {
    let sha = rec.sha256.as_slice();
    let mut blobs = tx.open_table(BLOBS)?;
    let refs = blobs.get(sha)?.map_or(0, |v| v.value());
    blobs.insert(sha, refs + 1)?;
    let mut chunks = tx.open_table(UPLOAD_CHUNKS)?;
    if refs == 0 {
        let mut content = tx.open_table(BLOB_CHUNKS)?;
        for row in chunks.range((id, 0)..=(id, u64::MAX))? {
            let (k, v) = row?;
            content.insert((sha, k.value().1), v.value())?;
        }
    }
    chunks.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    tx.open_table(USER_UPLOADS)?.remove((rec.owner_id.as_str(), id))?;
    put(tx, id, Some(before), rec)
}

/// Deletes attachment (or upload) `id` whole: its record, its chunks or its share of the
/// content (the content itself with the last attachment that has it), its owner's usage.
pub fn remove(
    tx: &redb::WriteTransaction,
    id: &str,
    rec: &AttachmentRecord,
) -> Result<(), StoreError> {
    if rec.idle_since_ms != 0 {
        tx.open_table(ATTACHMENTS_IDLE)?.remove((rec.idle_since_ms as u64, id))?;
    }
    tx.open_table(ATTACHMENTS)?.remove(id)?;
    tx.open_table(ATTACHMENT_ROOMS)?.retain_in((id, "")..=(id, "\u{10FFFF}"), |_, _| false)?;
    if rec.finished_at_ms == 0 {
        tx.open_table(UPLOAD_CHUNKS)?.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
        tx.open_table(USER_UPLOADS)?.remove((rec.owner_id.as_str(), id))?;
    } else {
        let sha = rec.sha256.as_slice();
        let mut blobs = tx.open_table(BLOBS)?;
        let refs = blobs.get(sha)?.map_or(0, |v| v.value());
        if refs > 1 {
            blobs.insert(sha, refs - 1)?;
        } else {
            blobs.remove(sha)?;
            tx.open_table(BLOB_CHUNKS)?.retain_in((sha, 0)..=(sha, u64::MAX), |_, _| false)?;
        }
    }
    add_usage(tx, &rec.owner_id, -(rec.size as i64))
}

/// A message in `room` now carries attachment `id`.
pub fn post(
    tx: &redb::WriteTransaction,
    id: &str,
    rec: &AttachmentRecord,
    room: &str,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(ATTACHMENT_ROOMS)?;
    let n = t.get((id, room))?.map_or(0, |v| v.value());
    t.insert((id, room), n + 1)?;
    drop(t);
    let next = AttachmentRecord { posts: rec.posts + 1, idle_since_ms: 0, ..rec.clone() };
    put(tx, id, Some(rec), &next)
}

/// A message in `room` carrying attachment `id` was deleted or pruned at `now_ms`; the last
/// one makes the attachment idle from then on.
pub fn release(
    tx: &redb::WriteTransaction,
    id: &str,
    room: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let Some(rec) = get(tx, id)? else {
        return Ok(());
    };
    let mut t = tx.open_table(ATTACHMENT_ROOMS)?;
    let n = t.get((id, room))?.map(|v| v.value());
    match n {
        Some(n) if n > 1 => {
            t.insert((id, room), n - 1)?;
        }
        _ => {
            t.remove((id, room))?;
        }
    }
    drop(t);
    let posts = rec.posts.saturating_sub(1);
    let idle_since_ms = if posts == 0 { now_ms.max(1) } else { 0 };
    let next = AttachmentRecord { posts, idle_since_ms, ..rec.clone() };
    put(tx, id, Some(&rec), &next)
}

/// `edgechat check`'s part: every finished attachment's content is stored, each content's
/// count of attachments is right, its pieces add up to its size and hash to its key (so every
/// page of every file is read and checksummed too), and each unfinished upload holds the bytes
/// it says it received. One line per problem.
pub fn check(s: &impl Snapshot) -> Result<Vec<String>, StoreError> {
    use sha2::Digest;
    let mut problems = Vec::new();
    // Content -> (attachments with it, their size).
    let mut wanted: std::collections::BTreeMap<Vec<u8>, (u64, u64)> = Default::default();
    for row in s.table(ATTACHMENTS)?.iter()? {
        let (id, v) = row?;
        let id = id.value();
        let rec: AttachmentRecord = match decode("attachments", v.value()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("attachment {id}: {e}"));
                continue;
            }
        };
        if rec.finished_at_ms != 0 {
            let w = wanted.entry(rec.sha256.clone()).or_insert((0, rec.size));
            w.0 += 1;
            continue;
        }
        let mut got = 0u64;
        upload_bytes(s, id, |b| got += b.len() as u64)?;
        if got != rec.received {
            problems.push(format!("upload {id}: {got} bytes stored, {} received", rec.received));
        }
    }
    for row in s.table(BLOBS)?.iter()? {
        let (sha, refs) = row?;
        let (sha, refs) = (sha.value().to_vec(), refs.value());
        let name = crate::attachments::hex(&sha);
        match wanted.remove(&sha) {
            None => problems.push(format!("content {name}: stored, but no attachment has it")),
            Some((n, _)) if n != refs => {
                problems.push(format!("content {name}: counts {refs} attachments, {n} have it"))
            }
            Some((_, size)) => {
                let mut hash = sha2::Sha256::new();
                let mut len = 0u64;
                for piece in
                    s.table(BLOB_CHUNKS)?.range((sha.as_slice(), 0)..=(sha.as_slice(), u64::MAX))?
                {
                    let (_, v) = piece?;
                    hash.update(v.value());
                    len += v.value().len() as u64;
                }
                let got: [u8; 32] = hash.finalize().into();
                if len != size || got[..] != sha[..] {
                    problems.push(format!("content {name}: {len} bytes of {size}, or damaged"));
                }
            }
        }
    }
    for (sha, (n, _)) in wanted {
        let name = crate::attachments::hex(&sha);
        problems.push(format!("content {name}: {n} attachments have it, but it is not stored"));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use redb::ReadableTableMetadata;

    fn rec(owner: &str, sha: u8, size: u64) -> AttachmentRecord {
        AttachmentRecord {
            owner_id: owner.into(),
            name: "f.bin".into(),
            size,
            sha256: vec![sha; 32],
            created_at_ms: 10,
            idle_since_ms: 10,
            ..Default::default()
        }
    }

    /// Uploads `id` whole (in two chunks) and finishes it at time 20.
    fn upload(tx: &redb::WriteTransaction, id: &str, r: &AttachmentRecord, bytes: &[u8]) {
        create(tx, id, r).unwrap();
        let half = bytes.len() / 2;
        let mut now = r.clone();
        for (at, part) in [(0, &bytes[..half]), (half, &bytes[half..])] {
            let next = AttachmentRecord { received: (at + part.len()) as u64, ..now.clone() };
            put_chunk(tx, id, &now, &next, at as u64, part).unwrap();
            now = next;
        }
        let done = AttachmentRecord { finished_at_ms: 20, idle_since_ms: 20, ..now.clone() };
        finish(tx, id, &now, &done).unwrap();
    }

    #[test]
    fn content_is_stored_once_and_goes_with_its_last_attachment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let tx = store.db.begin_write().unwrap();
        upload(&tx, "a1", &rec("u1", 7, 1000), &bytes);
        upload(&tx, "a2", &rec("u2", 7, 1000), &bytes);
        assert_eq!(
            tx.open_table(BLOBS).unwrap().get([7u8; 32].as_slice()).unwrap().unwrap().value(),
            2
        );
        // Reads cross chunk boundaries and stop at the end.
        assert_eq!(read(&tx, &[7; 32], 490, 20).unwrap(), bytes[490..510]);
        assert_eq!(read(&tx, &[7; 32], 990, 64).unwrap(), bytes[990..]);
        assert!(read(&tx, &[7; 32], 1000, 64).unwrap().is_empty());
        assert!(tx.open_table(UPLOAD_CHUNKS).unwrap().is_empty().unwrap());
        assert_eq!(usage(&tx, "u1").unwrap(), 1000);
        assert!(open_uploads(&tx, "u1").unwrap().is_empty());
        // Idle since 20: collected at a cutoff of 20, not 19.
        assert!(idle_until(&tx, 19, 10).unwrap().is_empty());
        assert_eq!(idle_until(&tx, 20, 10).unwrap(), ["a1", "a2"]);

        // Posting takes a1 out of the idle index; deleting its message puts it back.
        let a1 = get(&tx, "a1").unwrap().unwrap();
        post(&tx, "a1", &a1, "r1").unwrap();
        assert_eq!(rooms(&tx, "a1").unwrap(), ["r1"]);
        assert_eq!(idle_until(&tx, i64::MAX, 10).unwrap(), ["a2"]);
        release(&tx, "a1", "r1", 30).unwrap();
        assert!(rooms(&tx, "a1").unwrap().is_empty());
        assert_eq!(idle_until(&tx, 29, 10).unwrap(), ["a2"]);

        remove(&tx, "a1", &get(&tx, "a1").unwrap().unwrap()).unwrap();
        assert_eq!(read(&tx, &[7; 32], 0, 10).unwrap(), bytes[..10], "a2 still has it");
        remove(&tx, "a2", &get(&tx, "a2").unwrap().unwrap()).unwrap();
        assert!(read(&tx, &[7; 32], 0, 10).unwrap().is_empty());
        assert!(tx.open_table(BLOBS).unwrap().is_empty().unwrap());
        assert!(tx.open_table(ATTACHMENTS_IDLE).unwrap().is_empty().unwrap());
        assert_eq!(usage(&tx, "u1").unwrap() + usage(&tx, "u2").unwrap(), 0);
    }

    #[test]
    fn large_chunks_are_stored_in_pieces_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let len = 2 * PIECE_BYTES + 3000;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        let tx = store.db.begin_write().unwrap();
        upload(&tx, "a1", &rec("u1", 5, len as u64), &bytes);
        let pieces = tx.open_table(BLOB_CHUNKS).unwrap().len().unwrap();
        assert_eq!(pieces, 4, "two halves of two pieces each");
        for v in tx.open_table(BLOB_CHUNKS).unwrap().iter().unwrap() {
            assert!(v.unwrap().1.value().len() <= PIECE_BYTES);
        }
        assert_eq!(read(&tx, &[5; 32], 0, len).unwrap(), bytes);
        let at = PIECE_BYTES as u64 - 10;
        assert_eq!(
            read(&tx, &[5; 32], at, 200_000).unwrap(),
            bytes[at as usize..at as usize + 200_000]
        );
    }

    #[test]
    fn check_finds_missing_counted_and_damaged_content() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let tx = store.db.begin_write().unwrap();
        let bytes = vec![3u8; 1000];
        let sha = sha2::Sha256::digest(&bytes).to_vec();
        let r = AttachmentRecord { sha256: sha.clone(), ..rec("u1", 0, 1000) };
        upload(&tx, "a1", &r, &bytes);
        upload(&tx, "a2", &r, &bytes);
        let half = rec("u1", 9, 100);
        create(&tx, "a3", &half).unwrap();
        let next = AttachmentRecord { received: 3, ..half.clone() };
        put_chunk(&tx, "a3", &half, &next, 0, b"abc").unwrap();
        assert_eq!(check(&tx).unwrap(), Vec::<String>::new());

        tx.open_table(BLOBS).unwrap().insert(sha.as_slice(), 3).unwrap();
        let found = check(&tx).unwrap();
        assert!(found[0].contains("counts 3 attachments, 2 have it"), "{found:?}");
        tx.open_table(BLOBS).unwrap().insert(sha.as_slice(), 2).unwrap();
        tx.open_table(BLOB_CHUNKS).unwrap().insert((sha.as_slice(), 500), b"x".as_slice()).unwrap();
        let found = check(&tx).unwrap();
        assert!(found[0].contains("or damaged"), "{found:?}");
        tx.open_table(BLOBS).unwrap().remove(sha.as_slice()).unwrap();
        tx.open_table(UPLOAD_CHUNKS).unwrap().remove(("a3", 0)).unwrap();
        let found = check(&tx).unwrap();
        assert!(found.iter().any(|p| p.contains("0 bytes stored, 3 received")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("2 attachments have it, but it is not stored")));
    }

    #[test]
    fn an_unfinished_upload_is_removed_with_its_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let tx = store.db.begin_write().unwrap();
        let r = rec("u1", 9, 100);
        create(&tx, "a1", &r).unwrap();
        let next = AttachmentRecord { received: 3, idle_since_ms: 15, ..r.clone() };
        put_chunk(&tx, "a1", &r, &next, 0, b"abc").unwrap();
        let mut seen = Vec::new();
        upload_bytes(&tx, "a1", |b| seen.extend_from_slice(b)).unwrap();
        assert_eq!(seen, b"abc");
        assert_eq!(open_uploads(&tx, "u1").unwrap(), ["a1"]);
        assert_eq!(idle_until(&tx, 14, 10).unwrap(), Vec::<String>::new(), "moved to 15");
        remove(&tx, "a1", &next).unwrap();
        assert!(tx.open_table(UPLOAD_CHUNKS).unwrap().is_empty().unwrap());
        assert!(open_uploads(&tx, "u1").unwrap().is_empty());
        assert!(idle_until(&tx, i64::MAX, 10).unwrap().is_empty());
        assert_eq!(usage(&tx, "u1").unwrap(), 0);
    }
}
