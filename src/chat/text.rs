//! Message text rules and `@mention` parsing (DESIGN.md "Messages and delivery"). Pure.

use crate::auth::password::is_username_char;

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty or whitespace only.
    #[error("text is empty or blank")]
    Blank,
    /// Over the limit.
    #[error("text is {len} bytes, more than the limit of {max} bytes")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a message text: not blank, at most `max_bytes` of UTF-8 (UTF-8 validity is already
/// guaranteed by protobuf decoding of `string` fields).
pub fn check_text(text: &str, max_bytes: usize) -> Result<(), TextError> {
    if text.trim().is_empty() {
        return Err(TextError::Blank);
    }
    if text.len() > max_bytes {
        return Err(TextError::TooLong { len: text.len(), max: max_bytes });
    }
    Ok(())
}

/// The (lowercased, deduplicated, in order of appearance) usernames mentioned in `text`: `@` at
/// the start or after a character that is not a username character, then a username,
/// case-insensitive. Whether each is a room member is the caller's business.
pub fn mentioned_names(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let at_boundary = i == 0 || !is_username_char(chars[i - 1].to_ascii_lowercase());
        if chars[i] == '@' && at_boundary {
            let name: String = chars[i + 1..]
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .take_while(|c| is_username_char(*c))
                .collect();
            i += 1 + name.chars().count();
            // Trailing dots and dashes are punctuation ("ask @bob."), not part of the name.
            let name = name.trim_end_matches(['.', '-']).to_string();
            if (3..=32).contains(&name.len()) && !out.contains(&name) {
                out.push(name);
            }
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(check_text("", 10), Err(TextError::Blank));
        assert_eq!(check_text(" \n\t ", 10), Err(TextError::Blank));
        assert!(check_text("hi", 10).is_ok());
        assert!(check_text("ééééé", 10).is_ok());
        assert!(matches!(check_text("éééééé", 10), Err(TextError::TooLong { len: 12, max: 10 })));
    }

    #[test]
    fn mentions() {
        assert_eq!(mentioned_names("@alice hi @Bob and @alice"), vec!["alice", "bob"]);
        assert_eq!(mentioned_names("mail me: joe@example.com"), Vec::<String>::new());
        assert_eq!(mentioned_names("(@carol) ask @dave."), vec!["carol", "dave"]);
        assert_eq!(mentioned_names("@ab @x @"), Vec::<String>::new());
        assert_eq!(mentioned_names("hey@eve"), Vec::<String>::new());
        assert_eq!(mentioned_names("é@frank"), vec!["frank"]);
    }
}
