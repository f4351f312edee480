//! The search index: for each room and word, the seqs of the room's live messages that have
//! the word (`search::words` of their current text). Kept in the same transaction as every
//! send, edit, delete and retention pass, so it is never behind History and a crash leaves
//! it exactly as consistent as the messages.
//!
//! Layout: one table per room, `search/<room id>`: (word, first seq) -> the block's other
//! seqs, ascending, as LEB128 deltas from the one before (a common word's next message is a
//! few seqs on: one byte each). A block holds at most [`BLOCK`] seqs; a word's blocks cover
//! disjoint, ascending ranges, so the block that could hold a seq is the one with the
//! greatest first seq at or under it: one B-tree lookup. Appends (the common case) go to the
//! word's last block until it is full, then start a new one, so blocks stay full.
//!
//! The newest messages of a room wait as one row each, `("", seq)` -> their words (a word is
//! never empty, so these rows sort before every word's): a send writes one row where the
//! last send wrote, not one block per word in as many places of the tree. Once the rows
//! span [`MERGE_SPAN`] seqs, the send that gets there moves them all into the blocks, so
//! each block is rewritten once per merge instead of once per message in it. Measured on a
//! million messages, writing every message's blocks in place cost two thirds of the send
//! rate (each commit copied a page per word: docs/PERFORMANCE.md). Every merged seq is below
//! every waiting one (seqs only grow, and a merge takes all the rows), so a search reads the
//! rows first, then the blocks.
//!
//! Why blocks and not a row per (word, seq): a row costs a B-tree entry (the word again, a
//! u64 and redb's per-entry overhead) for every word of every message, more than the
//! message itself; a block costs a key per 128 postings and a byte or two per posting.
//! Sizes on a million messages are in docs/PERFORMANCE.md.

use redb::{ReadableTable, TableDefinition};

use super::{Snapshot, StoreError};

/// Per-room search tables are named this plus the room id.
pub(super) const TABLE_PREFIX: &str = "search/";

/// Most seqs in one block.
const BLOCK: usize = 128;

/// The word of a waiting message's row.
const WAITING: &str = "";

/// Waiting rows are merged into the blocks once they span this many seqs: at most this many
/// rows (plus one) per room, which every search of the room reads. 64 messages of about 11
/// words make some 700 postings, which a merge writes in one pass over the blocks.
const MERGE_SPAN: u64 = 64;

/// The name of a room's search table.
pub(super) fn table_name(room: &str) -> String {
    format!("{TABLE_PREFIX}{room}")
}

/// A room's search table.
pub(super) fn table(name: &str) -> TableDefinition<'_, (&'static str, u64), &'static [u8]> {
    TableDefinition::new(name)
}

fn encode(seqs: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(seqs.len() * 2);
    for pair in seqs.windows(2) {
        let mut d = pair[1] - pair[0];
        loop {
            let byte = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

fn decode(room: &str, first: u64, bytes: &[u8]) -> Result<Vec<u64>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        table: "search",
        message: format!("room {room}: a block at seq {first} does not decode"),
    };
    let mut out = vec![first];
    let (mut at, mut d, mut shift) = (first, 0u64, 0u32);
    for &b in bytes {
        if shift > 63 {
            return Err(corrupt());
        }
        d |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            at = at.checked_add(d).filter(|_| d > 0).ok_or_else(corrupt)?;
            out.push(at);
            (d, shift) = (0, 0);
        }
    }
    if shift != 0 {
        return Err(corrupt());
    }
    Ok(out)
}

/// The block of `word` that holds or would hold `seq`: its first seq and all its seqs.
fn block_of(
    t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    room: &str,
    word: &str,
    seq: u64,
) -> Result<Option<(u64, Vec<u64>)>, StoreError> {
    let Some(row) = t.range((word, 0)..=(word, seq))?.next_back() else { return Ok(None) };
    let (k, v) = row?;
    let first = k.value().1;
    Ok(Some((first, decode(room, first, v.value())?)))
}

/// A room's search table, open for writing.
type WriteTable<'tx> = redb::Table<'tx, (&'static str, u64), &'static [u8]>;

/// Indexes `room`'s newest message, `seq`, under `words`: a waiting row, and the merge of all
/// of them once they span [`MERGE_SPAN`] seqs.
pub fn add(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    words: &[String],
) -> Result<(), StoreError> {
    if words.is_empty() {
        return Ok(());
    }
    let name = table_name(room);
    let mut t = tx.open_table(table(&name))?;
    t.insert((WAITING, seq), words.join(" ").as_bytes())?;
    let first = match t.range((WAITING, 0)..=(WAITING, u64::MAX))?.next() {
        Some(row) => row?.0.value().1,
        None => seq,
    };
    if seq.saturating_sub(first) >= MERGE_SPAN {
        merge(&mut t, room)?;
    }
    Ok(())
}

/// Moves message `seq` of `room` from the words `old` to `new` (an edit): its waiting row
/// rewritten, or in the blocks only the words that differ.
pub fn replace(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    old: &[String],
    new: &[String],
) -> Result<(), StoreError> {
    let name = table_name(room);
    let mut t = tx.open_table(table(&name))?;
    if t.get((WAITING, seq))?.is_some() {
        if new.is_empty() {
            t.remove((WAITING, seq))?;
        } else {
            t.insert((WAITING, seq), new.join(" ").as_bytes())?;
        }
        return Ok(());
    }
    for word in old.iter().filter(|w| !new.contains(w)) {
        take_out(&mut t, room, word, seq)?;
    }
    for word in new.iter().filter(|w| !old.contains(w)) {
        put_in(&mut t, room, word, &[seq])?;
    }
    Ok(())
}

/// Takes message `seq` of `room`, indexed under `words`, out of the index (not there: nothing
/// changes).
pub fn remove(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    words: &[String],
) -> Result<(), StoreError> {
    if words.is_empty() {
        return Ok(());
    }
    let name = table_name(room);
    let mut t = tx.open_table(table(&name))?;
    if t.remove((WAITING, seq))?.is_some() {
        return Ok(());
    }
    for word in words {
        take_out(&mut t, room, word, seq)?;
    }
    Ok(())
}

/// Moves every waiting row of `room` into the blocks, a word at a time.
fn merge(t: &mut WriteTable<'_>, room: &str) -> Result<(), StoreError> {
    let mut postings: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let mut seqs = Vec::new();
    for row in t.range((WAITING, 0)..=(WAITING, u64::MAX))? {
        let (k, v) = row?;
        let seq = k.value().1;
        seqs.push(seq);
        let words = std::str::from_utf8(v.value()).map_err(|_| StoreError::Corrupt {
            table: "search",
            message: format!("room {room}: the waiting row of seq {seq} is not text"),
        })?;
        for word in words.split(' ').filter(|w| !w.is_empty()) {
            postings.entry(word.to_string()).or_default().push(seq);
        }
    }
    for seq in seqs {
        t.remove((WAITING, seq))?;
    }
    for (word, seqs) in &postings {
        put_in(t, room, word, seqs)?;
    }
    Ok(())
}

/// Adds `seqs` (ascending) to `word`'s blocks. Past the word's last seq (a merge, the common
/// case) they fill its last block, then new full ones; otherwise (an edit of an older
/// message) each goes into the block that covers it, which splits in halves when full.
fn put_in(t: &mut WriteTable<'_>, room: &str, word: &str, seqs: &[u64]) -> Result<(), StoreError> {
    let Some(&lowest) = seqs.first() else { return Ok(()) };
    let (first, mut block) = block_of(t, room, word, u64::MAX)?.unwrap_or((lowest, Vec::new()));
    if block.last().is_none_or(|&last| last < lowest) {
        block.extend_from_slice(seqs);
        let mut chunks = block.chunks(BLOCK);
        if let Some(c) = chunks.next() {
            t.insert((word, first), encode(c).as_slice())?;
        }
        for c in chunks {
            t.insert((word, c[0]), encode(c).as_slice())?;
        }
        return Ok(());
    }
    for &seq in seqs {
        let Some((first, mut seqs)) = block_of(t, room, word, seq)? else {
            // Before the word's first block.
            t.insert((word, seq), [].as_slice())?;
            continue;
        };
        let Err(at) = seqs.binary_search(&seq) else { continue };
        seqs.insert(at, seq);
        if seqs.len() > BLOCK {
            let rest = seqs.split_off(seqs.len() / 2);
            t.insert((word, rest[0]), encode(&rest).as_slice())?;
        }
        t.insert((word, first), encode(&seqs).as_slice())?;
    }
    Ok(())
}

/// Takes `seq` out of `word`'s blocks.
fn take_out(t: &mut WriteTable<'_>, room: &str, word: &str, seq: u64) -> Result<(), StoreError> {
    let Some((first, mut seqs)) = block_of(t, room, word, seq)? else { return Ok(()) };
    let Ok(at) = seqs.binary_search(&seq) else { return Ok(()) };
    seqs.remove(at);
    if at == 0 {
        t.remove((word, first))?;
        if let Some(&new_first) = seqs.first() {
            t.insert((word, new_first), encode(&seqs).as_slice())?;
        }
    } else {
        t.insert((word, first), encode(&seqs).as_slice())?;
    }
    Ok(())
}

/// One word's list in one room, read backwards (newest first), one block at a time.
struct WordList {
    word: String,
    /// The block last read (ascending) and the seq it was looked up for: it answers every
    /// seq from its first up to that one without another lookup.
    block: Vec<u64>,
    looked_up_for: u64,
}

impl WordList {
    fn at_or_below(
        &mut self,
        t: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
        room: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let cached =
            matches!(self.block.first(), Some(&f) if f <= seq && seq <= self.looked_up_for);
        if !cached {
            match block_of(t, room, &self.word, seq)? {
                Some((_, seqs)) => self.block = seqs,
                None => return Ok(None),
            }
            self.looked_up_for = seq;
        }
        let below = self.block.partition_point(|&s| s <= seq);
        Ok(below.checked_sub(1).map(|i| self.block[i]))
    }
}

/// A search of one room for the messages that have every one of some words, newest first.
pub struct RoomSearch {
    room: String,
    name: String,
    lists: Vec<WordList>,
    /// The waiting messages that match, ascending; read at the first `next`.
    waiting: Option<Vec<u64>>,
}

impl RoomSearch {
    /// A search of `room` for `words` (at least one).
    pub fn new(room: &str, words: &[String]) -> RoomSearch {
        RoomSearch {
            room: room.to_string(),
            name: table_name(room),
            lists: words
                .iter()
                .map(|w| WordList { word: w.clone(), block: Vec::new(), looked_up_for: 0 })
                .collect(),
            waiting: None,
        }
    }

    /// The room searched.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The newest matching message with a seq `<= at_most`. Calls made with a falling
    /// `at_most` (as a search pages down) reuse the blocks already read.
    pub fn next(&mut self, s: &impl Snapshot, at_most: u64) -> Result<Option<u64>, StoreError> {
        let Some(t) = s.table_opt(table(&self.name))? else { return Ok(None) };
        if self.waiting.is_none() {
            let mut hits = Vec::new();
            for row in t.range((WAITING, 0)..=(WAITING, u64::MAX))? {
                let (k, v) = row?;
                let has =
                    |word: &str| v.value().split(|&b| b == b' ').any(|w| w == word.as_bytes());
                if self.lists.iter().all(|l| has(&l.word)) {
                    hits.push(k.value().1);
                }
            }
            self.waiting = Some(hits);
        }
        let waiting = self.waiting.as_deref().unwrap_or_default();
        if let Some(i) = waiting.partition_point(|&s| s <= at_most).checked_sub(1) {
            return Ok(Some(waiting[i]));
        }
        let room = self.room.as_str();
        let mut lists: Vec<_> =
            self.lists.iter_mut().map(|l| |seq| l.at_or_below(&t, room, seq)).collect();
        crate::search::next_common(&mut lists, at_most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn w(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    fn all(store: &Store, room: &str, words: &[&str]) -> Vec<u64> {
        let tx = store.read().unwrap();
        let mut search = RoomSearch::new(room, &w(words));
        let mut out = Vec::new();
        let mut at_most = u64::MAX;
        while let Some(seq) = search.next(&tx, at_most).unwrap() {
            out.push(seq);
            let Some(next) = seq.checked_sub(1) else { break };
            at_most = next;
        }
        out
    }

    fn blocks(store: &Store, room: &str) -> Vec<(String, u64, usize)> {
        let tx = store.read().unwrap();
        let name = table_name(room);
        let t = tx.open_table(table(&name)).unwrap();
        t.iter()
            .unwrap()
            .filter(|r| r.as_ref().unwrap().0.value().0 != WAITING)
            .map(|r| {
                let (k, v) = r.unwrap();
                let (word, first) = k.value();
                (word.to_string(), first, decode(room, first, v.value()).unwrap().len())
            })
            .collect()
    }

    #[test]
    fn blocks_fill_split_and_shrink_and_searches_find_exactly_the_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let tx = store.db.begin_write().unwrap();
        // 300 messages: every one has "all", the even ones "even", every third "third"; the
        // seqs grow by 1 and, past 200, by 1,000 (multi-byte deltas).
        let seqs: Vec<u64> = (1..=300).map(|i| if i > 200 { i * 1000 } else { i }).collect();
        for (i, &seq) in seqs.iter().enumerate() {
            let mut words = vec!["all"];
            if i % 2 == 0 {
                words.push("even");
            }
            if i % 3 == 0 {
                words.push("third");
            }
            add(&tx, "r", seq, &w(&words)).unwrap();
        }
        add(&tx, "other", 5, &w(&["all"])).unwrap();
        merge(&mut tx.open_table(table(&table_name("r"))).unwrap(), "r").unwrap();
        tx.commit().unwrap();
        let want = |f: &dyn Fn(usize) -> bool| -> Vec<u64> {
            seqs.iter().enumerate().rev().filter(|(i, _)| f(*i)).map(|(_, &s)| s).collect()
        };
        assert_eq!(all(&store, "r", &["all"]), want(&|_| true));
        assert_eq!(all(&store, "r", &["even", "third"]), want(&|i| i % 6 == 0));
        assert_eq!(all(&store, "r", &["third", "all", "even"]), want(&|i| i % 6 == 0));
        assert_eq!(all(&store, "r", &["all", "nothing"]), Vec::<u64>::new());
        assert_eq!(all(&store, "nowhere", &["all"]), Vec::<u64>::new());
        // Appends fill blocks: "all" is 128 + 128 + 44.
        let sizes: Vec<usize> =
            blocks(&store, "r").into_iter().filter(|b| b.0 == "all").map(|b| b.2).collect();
        assert_eq!(sizes, [128, 128, 44]);

        // Removals, the first of a block included, and an insert into a full block.
        let tx = store.db.begin_write().unwrap();
        remove(&tx, "r", 1, &w(&["all", "even"])).unwrap();
        remove(&tx, "r", 129, &w(&["all"])).unwrap(); // the second block's first
        remove(&tx, "r", 129, &w(&["all"])).unwrap(); // gone already: no change
        remove(&tx, "r", 7, &w(&["nothing"])).unwrap();
        // Into the middle of the second block (seqs 130-200, 201,000-256,000): it fills up
        // again, then splits in halves.
        replace(&tx, "r", 150_000, &[], &w(&["all"])).unwrap();
        replace(&tx, "r", 160_000, &[], &w(&["all"])).unwrap();
        tx.commit().unwrap();
        let mut expect: Vec<u64> = want(&|_| true);
        expect.retain(|&s| s != 1 && s != 129);
        expect.extend([150_000, 160_000]);
        expect.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(all(&store, "r", &["all"]), expect);
        let blocks = blocks(&store, "r");
        assert!(blocks.iter().any(|b| b.0 == "all" && b.1 == 130), "re-keyed: {blocks:?}");
        let sizes: Vec<usize> = blocks.iter().filter(|b| b.0 == "all").map(|b| b.2).collect();
        assert_eq!(sizes, [127, 64, 65, 44], "{blocks:?}");
    }

    #[test]
    fn the_newest_messages_wait_in_rows_until_they_span_the_merge_and_are_found_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let waiting = |store: &Store| {
            let tx = store.read().unwrap();
            let t = tx.open_table(table(&table_name("r"))).unwrap();
            t.range((WAITING, 0)..=(WAITING, u64::MAX)).unwrap().count()
        };
        // Seqs 1..=64 (one message each, odd ones "odd"): all wait; nothing is in a block.
        let text = |seq: u64| if seq % 2 == 1 { w(&["chat", "odd"]) } else { w(&["chat"]) };
        let tx = store.db.begin_write().unwrap();
        for seq in 1..=64 {
            add(&tx, "r", seq, &text(seq)).unwrap();
        }
        // An edit and a delete of waiting messages rewrite and drop their rows.
        replace(&tx, "r", 3, &text(3), &w(&["chat", "edited"])).unwrap();
        remove(&tx, "r", 5, &text(5)).unwrap();
        tx.commit().unwrap();
        assert_eq!(waiting(&store), 63);
        assert!(blocks(&store, "r").is_empty());
        let odd: Vec<u64> = (1..=64).rev().filter(|s| s % 2 == 1 && *s != 3 && *s != 5).collect();
        assert_eq!(all(&store, "r", &["odd", "chat"]), odd);
        assert_eq!(all(&store, "r", &["edited"]), [3]);

        // Seq 65 spans 64 from the first waiting (1): everything moves into the blocks.
        let tx = store.db.begin_write().unwrap();
        add(&tx, "r", 65, &text(65)).unwrap();
        tx.commit().unwrap();
        assert_eq!(waiting(&store), 0);
        let mut odd = odd;
        odd.insert(0, 65);
        assert_eq!(all(&store, "r", &["odd"]), odd);
        // Then newer ones wait again and a search reads both, newest first; an edit and a
        // delete of merged messages change the blocks.
        let tx = store.db.begin_write().unwrap();
        for seq in 66..=70 {
            add(&tx, "r", seq, &text(seq)).unwrap();
        }
        replace(&tx, "r", 7, &text(7), &w(&["chat", "edited"])).unwrap();
        remove(&tx, "r", 9, &text(9)).unwrap();
        tx.commit().unwrap();
        assert_eq!(waiting(&store), 5);
        let mut want: Vec<u64> = vec![69, 67];
        want.extend(odd.iter().filter(|&&s| s != 7 && s != 9));
        assert_eq!(all(&store, "r", &["odd"]), want);
        assert_eq!(all(&store, "r", &["chat", "edited"]), [7, 3]);
        assert_eq!(all(&store, "r", &["chat"]).len(), 70 - 2);
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_corrupt() {
        let seqs = [5, 6, 200, 70_000, u64::MAX / 2];
        assert_eq!(decode("r", 5, &encode(&seqs)).unwrap(), seqs);
        assert_eq!(encode(&[5, 6, 7]), [1, 1]);
        assert!(decode("r", 1, &[0x80]).is_err(), "unfinished varint");
        assert!(decode("r", 1, &[0]).is_err(), "a zero delta");
        assert!(decode("r", u64::MAX, &[1]).is_err(), "past u64");
    }
}
