//! Text from the server, made safe for a terminal: messages and names are other people's
//! input, and an escape sequence in one could move the cursor, retitle the window or hide
//! text. Control characters (C0, DEL, C1) become visible caret or `\u{..}` forms; so do the
//! bidirectional overrides that can make a line read differently from what it says.

/// `s` on one line, every control character made visible.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_clean(&mut out, c);
    }
    out
}

/// The lines of a message text: split at newlines, tabs as spaces, everything else as
/// [`clean`]. A message is never empty of lines (an empty text is one empty line).
pub fn clean_lines(s: &str) -> Vec<String> {
    s.split('\n')
        .map(|line| {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let mut out = String::with_capacity(line.len());
            for c in line.chars() {
                if c == '\t' {
                    out.push_str("    ");
                } else {
                    push_clean(&mut out, c);
                }
            }
            out
        })
        .collect()
}

fn push_clean(out: &mut String, c: char) {
    match c {
        '\u{0}'..='\u{1f}' => {
            out.push('^');
            out.push(char::from(c as u8 + 0x40));
        }
        '\u{7f}' => out.push_str("^?"),
        '\u{80}'..='\u{9f}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        }
        c => out.push(c),
    }
}

/// A time as local `HH:MM`.
pub fn local_hm(ms: i64) -> String {
    let (h, m, _) = local_parts(ms);
    format!("{h:02}:{m:02}")
}

/// A time as local `YYYY-MM-DD HH:MM`.
pub fn local_date_hm(ms: i64) -> String {
    let (h, m, (y, mo, d)) = local_parts(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

fn local_parts(ms: i64) -> (i32, i32, (i32, i32, i32)) {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which is ours; it is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return (0, 0, (1970, 1, 1));
    }
    (tm.tm_hour, tm.tm_min, (tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb"), "a^[[2Jb");
        assert_eq!(clean("bell\u{7}\u{7f}"), "bell^G^?");
        assert_eq!(clean("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(clean("rtl\u{202e}txt"), "rtl\\u{202e}txt");
        assert_eq!(clean("two\nlines"), "two^Jlines");
        assert_eq!(clean("plain ünïcödé 🙂"), "plain ünïcödé 🙂");
    }

    #[test]
    fn message_lines_split_and_stay_clean() {
        assert_eq!(
            clean_lines("one\r\ntwo\tx\n\u{1b}]0;title\u{7}"),
            ["one", "two    x", "^[]0;title^G"]
        );
        assert_eq!(clean_lines(""), [""]);
    }
}
