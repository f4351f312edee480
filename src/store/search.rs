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

/// Calls `change` with `room`'s table, each word of `words` and the block that holds or would
/// hold `seq` (none: before the word's first block).
fn each_block(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    words: &[String],
    mut change: impl FnMut(&mut WriteTable<'_>, &str, Option<(u64, Vec<u64>)>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if words.is_empty() {
        return Ok(());
    }
    let name = table_name(room);
    let mut t = tx.open_table(table(&name))?;
    for word in words {
        let block = block_of(&t, room, word, seq)?;
        change(&mut t, word, block)?;
    }
    Ok(())
}

/// Indexes message `seq` of `room` under `words` (already there: nothing changes).
pub fn add(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    words: &[String],
) -> Result<(), StoreError> {
    each_block(tx, room, seq, words, |t, word, block| {
        let Some((first, mut seqs)) = block else {
            // Before the word's first block (or the word's first message).
            t.insert((word, seq), [].as_slice())?;
            return Ok(());
        };
        let Err(at) = seqs.binary_search(&seq) else { return Ok(()) };
        seqs.insert(at, seq);
        if seqs.len() > BLOCK {
            // An append starts a new block and leaves this one full; an insert in the middle
            // (an edit of an old message) splits it in halves.
            let keep = if at == seqs.len() - 1 { BLOCK } else { seqs.len() / 2 };
            let rest = seqs.split_off(keep);
            t.insert((word, rest[0]), encode(&rest).as_slice())?;
        }
        t.insert((word, first), encode(&seqs).as_slice())?;
        Ok(())
    })
}

/// Takes message `seq` of `room` out of the lists of `words` (not there: nothing changes).
pub fn remove(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    words: &[String],
) -> Result<(), StoreError> {
    each_block(tx, room, seq, words, |t, word, block| {
        let Some((first, mut seqs)) = block else { return Ok(()) };
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
    })
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
            add(&tx, "r", seq, &w(&words)).unwrap(); // twice: no change
        }
        add(&tx, "other", 5, &w(&["all"])).unwrap();
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
        add(&tx, "r", 150_000, &w(&["all"])).unwrap();
        add(&tx, "r", 160_000, &w(&["all"])).unwrap();
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
    fn encoding_round_trips_and_garbage_is_corrupt() {
        let seqs = [5, 6, 200, 70_000, u64::MAX / 2];
        assert_eq!(decode("r", 5, &encode(&seqs)).unwrap(), seqs);
        assert_eq!(encode(&[5, 6, 7]), [1, 1]);
        assert!(decode("r", 1, &[0x80]).is_err(), "unfinished varint");
        assert!(decode("r", 1, &[0]).is_err(), "a zero delta");
        assert!(decode("r", u64::MAX, &[1]).is_err(), "past u64");
    }
}
