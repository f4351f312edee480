//! Full-text search: what a word is, what a query may be, and the order results come in.
//! Plain functions, tested without a store; the index itself is `store::search`, the
//! service `chat::search`.
//!
//! A word is a run of letters and digits (Unicode), lowercased, at least two characters (one
//! letter is in nearly every message, which makes its list long and the word useless to look
//! for), at most [`MAX_WORD_CHARS`] (longer ones are cut there, in the index and the query
//! alike). Han, Hiragana and Katakana characters are words on their own: those scripts put no
//! spaces between words, and one character is the unit a reader looks for. Everything else
//! (punctuation, `@`, `#`, quotes, `-`, `*`, `:`) separates words: a query has no operators,
//! so none can make it expensive or fail; `OR` is a word like any other.

use std::cmp::Ordering;

/// Longest word kept, in characters (longer words are cut to this).
pub const MAX_WORD_CHARS: usize = 32;
/// Distinct words indexed per message, in the order they first occur: bounds what one long
/// message costs the index (a 4 KB message has at most about 1,300 words anyway).
pub const MAX_WORDS_PER_MESSAGE: usize = 256;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most words in a query (every one must be in a message for it to match).
pub const MAX_QUERY_WORDS: usize = 8;
/// Results per page when the request says 0.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page.
pub const MAX_LIMIT: u32 = 100;

/// A script whose characters are words on their own.
fn ideographic(c: char) -> bool {
    matches!(c,
        '\u{3040}'..='\u{30ff}' // Hiragana, Katakana
        | '\u{3400}'..='\u{4dbf}' // CJK extension A
        | '\u{4e00}'..='\u{9fff}' // CJK unified ideographs
        | '\u{f900}'..='\u{faff}' // CJK compatibility ideographs
        | '\u{20000}'..='\u{2fa1f}') // CJK extensions B-F, compatibility supplement
}

/// Calls `each` with every word of `text`, in order, repeats included.
fn for_each_word(text: &str, mut each: impl FnMut(String)) {
    // The word so far and its length in characters (it may hold more chars lowercased).
    let mut word = String::new();
    let mut chars = 0;
    let flush = |word: &mut String, chars: &mut usize, each: &mut dyn FnMut(String)| {
        if *chars >= 2 {
            each(std::mem::take(word));
        }
        word.clear();
        *chars = 0;
    };
    for c in text.chars() {
        if ideographic(c) {
            flush(&mut word, &mut chars, &mut each);
            each(c.to_string());
        } else if c.is_alphanumeric() {
            if chars < MAX_WORD_CHARS {
                word.extend(c.to_lowercase());
            }
            chars += 1;
        } else {
            flush(&mut word, &mut chars, &mut each);
        }
    }
    flush(&mut word, &mut chars, &mut each);
}

/// The words a message is found by: distinct, in the order they first occur, at most
/// [`MAX_WORDS_PER_MESSAGE`].
pub fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for_each_word(text, |w| {
        if out.len() < MAX_WORDS_PER_MESSAGE && !out.contains(&w) {
            out.push(w);
        }
    });
    out
}

/// Why a query was refused (`INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Over [`MAX_QUERY_BYTES`].
    #[error("the query is {0} bytes; at most {MAX_QUERY_BYTES}")]
    TooLong(usize),
    /// No word to look for.
    #[error(
        "the query has no word to search for (words are letters and digits, two or more; \
         punctuation and operators are ignored)"
    )]
    Empty,
    /// Over [`MAX_QUERY_WORDS`].
    #[error("the query has {0} different words; at most {MAX_QUERY_WORDS}")]
    TooManyWords(usize),
    /// A page token this server did not give.
    #[error("page_token is not one this server gave (pass next_page_token as it came)")]
    BadPageToken,
}

/// The words a query looks for, all of which a message must have (distinct).
pub fn parse_query(query: &str) -> Result<Vec<String>, QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong(query.len()));
    }
    let mut out: Vec<String> = Vec::new();
    for_each_word(query, |w| {
        if !out.contains(&w) {
            out.push(w);
        }
    });
    match out.len() {
        0 => Err(QueryError::Empty),
        n if n > MAX_QUERY_WORDS => Err(QueryError::TooManyWords(n)),
        _ => Ok(out),
    }
}

/// Where a result stands in the order results come in: newest first by the event's time,
/// then by room id and seq (both descending), so the order is total and a page token is one
/// position in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The message event's `at_ms`.
    pub at_ms: i64,
    /// Its room.
    pub room_id: String,
    /// Its seq.
    pub seq: u64,
}

impl Ord for Position {
    /// Ascending here means older: a max-heap of positions yields the newest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, &self.room_id, self.seq).cmp(&(other.at_ms, &other.room_id, other.seq))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Position {
    /// The page token that continues after this result: `at_ms.seq.room_id`.
    pub fn token(&self) -> String {
        format!("{}.{}.{}", self.at_ms, self.seq, self.room_id)
    }

    /// The position a page token names ("" is no position: the first page).
    pub fn from_token(token: &str) -> Result<Option<Position>, QueryError> {
        if token.is_empty() {
            return Ok(None);
        }
        let mut parts = token.splitn(3, '.');
        let (Some(at), Some(seq), Some(room)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(QueryError::BadPageToken);
        };
        match (at.parse(), seq.parse()) {
            (Ok(at_ms), Ok(seq)) if !room.is_empty() && room.len() <= 64 => {
                Ok(Some(Position { at_ms, room_id: room.to_string(), seq }))
            }
            _ => Err(QueryError::BadPageToken),
        }
    }
}

/// The largest seq `<= below` that every list has, given each list as a function from a seq
/// to the largest seq it holds at or under it. A zig-zag join: each list in turn lowers the
/// candidate to its own next entry until one pass changes nothing, so the work is bounded by
/// the entries skipped, never the lists' full length.
pub fn next_common<E>(
    lists: &mut [impl FnMut(u64) -> Result<Option<u64>, E>],
    below: u64,
) -> Result<Option<u64>, E> {
    let mut candidate = below;
    loop {
        let mut agreed = true;
        for at_or_below in lists.iter_mut() {
            let Some(found) = at_or_below(candidate)? else { return Ok(None) };
            if found < candidate {
                candidate = found;
                agreed = false;
            }
        }
        if agreed {
            return Ok(Some(candidate));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_runs_of_letters_and_digits() {
        assert_eq!(
            words("Deploy the v2 build, @alice: it's DONE! deploy again"),
            ["deploy", "the", "v2", "build", "alice", "it", "done", "again"]
        );
        // One-letter words and lone digits are not indexed; apostrophes split.
        assert_eq!(words("a b c 1 2 x"), Vec::<String>::new());
        // Unicode letters, case folded.
        assert_eq!(words("Größe ÉTÉ Ωμέγα"), ["größe", "été", "ωμέγα"]);
        // Ideographs one by one, beside the latin words around them.
        assert_eq!(words("東京tower"), ["東", "京", "tower"]);
        // Long words are cut, so a query with the same long word still finds them.
        let long = "x".repeat(100);
        assert_eq!(words(&long), ["x".repeat(MAX_WORD_CHARS)]);
        assert_eq!(parse_query(&long).unwrap(), words(&long));
        // A long message is indexed by its first distinct words only.
        let many: String = (0..1000).map(|i| format!("w{i} ")).collect();
        assert_eq!(words(&many).len(), MAX_WORDS_PER_MESSAGE);
    }

    #[test]
    fn queries_have_words_and_no_operators() {
        assert_eq!(parse_query("Deploy  deploy FAILED").unwrap(), ["deploy", "failed"]);
        // Operators of other search engines are separators here.
        assert_eq!(
            parse_query(r#""exact phrase" -not OR +must title:x* (a)"#).unwrap(),
            ["exact", "phrase", "not", "or", "must", "title"]
        );
        assert_eq!(parse_query(""), Err(QueryError::Empty));
        assert_eq!(parse_query("  *** -- \"\" a "), Err(QueryError::Empty));
        assert_eq!(parse_query(&"ab ".repeat(100)), Err(QueryError::TooLong(300)));
        assert_eq!(parse_query("aa bb cc dd ee ff gg hh ii"), Err(QueryError::TooManyWords(9)));
        assert_eq!(parse_query("aa bb cc dd ee ff gg hh aa").unwrap().len(), 8);
    }

    #[test]
    fn page_tokens_name_one_position() {
        let p = Position { at_ms: 1_700_000_000_123, room_id: "r0a1".into(), seq: 42 };
        assert_eq!(Position::from_token(&p.token()), Ok(Some(p)));
        assert_eq!(Position::from_token(""), Ok(None));
        let long_room = format!("1.2.{}", "r".repeat(65));
        for bad in ["x", "1.2", "1.2.", "a.2.r", "1.-2.r", long_room.as_str()] {
            assert_eq!(Position::from_token(bad), Err(QueryError::BadPageToken), "{bad}");
        }
        let older = Position { at_ms: 5, room_id: "b".into(), seq: 9 };
        let newer = Position { at_ms: 6, room_id: "a".into(), seq: 1 };
        assert!(newer > older);
        let same_ms = Position { at_ms: 5, room_id: "c".into(), seq: 1 };
        assert!(same_ms > older, "ties by room, then seq");
    }

    #[test]
    fn next_common_finds_what_every_list_has() {
        fn list(entries: &'static [u64]) -> impl FnMut(u64) -> Result<Option<u64>, ()> {
            move |s| Ok(entries.iter().rev().copied().find(|&e| e <= s))
        }
        let mut lists = [list(&[1, 3, 5, 7, 9, 11]), list(&[2, 3, 4, 9, 10]), list(&[3, 9, 12])];
        assert_eq!(next_common(&mut lists, u64::MAX), Ok(Some(9)));
        assert_eq!(next_common(&mut lists, 8), Ok(Some(3)));
        assert_eq!(next_common(&mut lists, 2), Ok(None));
        let mut one = [list(&[4, 8])];
        assert_eq!(next_common(&mut one, 7), Ok(Some(4)));
    }
}
