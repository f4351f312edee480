//! Draws a [`State`] with ratatui: a title, the room list, the current room's messages, the
//! member list, a typing/notice line, the input and a status line. Every width is measured
//! in terminal cells (wide characters count two), every line is wrapped to fit, and nothing
//! here can panic on any terminal size: below [`MIN_W`]×[`MIN_H`] it only says so.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use unicode_width::UnicodeWidthChar;

use super::commands::HELP;
use super::state::{Conn, Overlay, Pending, State};
use crate::proto::{self, room_event::Kind};
use crate::term::text::{clean, clean_lines};

/// The smallest terminal the full screen is drawn in.
pub const MIN_W: u16 = 24;
/// See [`MIN_W`].
pub const MIN_H: u16 = 7;
/// Input lines shown at most (more scroll inside the input).
const INPUT_ROWS: usize = 5;
/// Continuation lines of a message start under its text, this far in.
const INDENT: usize = 6;

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// A stable colour per user, so names are told apart at a glance.
fn user_color(id: &str) -> Color {
    const COLORS: [Color; 6] =
        [Color::Cyan, Color::Green, Color::Magenta, Color::Blue, Color::Yellow, Color::LightRed];
    let h = id.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    COLORS[h as usize % COLORS.len()]
}

fn char_width(c: char) -> usize {
    c.width().unwrap_or(0)
}

/// Display width of `s` in cells.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to at most `w` cells, with `…` when cut.
pub fn truncate(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if used + cw + 1 > w {
            break;
        }
        out.push(c);
        used += cw;
    }
    if w > 0 {
        out.push('…');
    }
    out
}

/// Wraps styled pieces into lines of at most `w` cells; continuation lines start with
/// `indent` spaces. Breaks at the last space when there is one, else anywhere (a long URL).
pub fn wrap(pieces: &[(String, Style)], w: usize, indent: usize) -> Vec<Line<'static>> {
    let w = w.max(1);
    let indent = if indent * 2 > w { 0 } else { indent };
    let mut lines: Vec<Vec<(String, Style)>> = vec![Vec::new()];
    let mut used = 0;
    for (text, style) in pieces {
        for c in text.chars() {
            let cw = char_width(c);
            if used + cw > w {
                // Move the unfinished word down when the line has a space to break at.
                let carry = take_last_word(lines.last_mut().expect("a line"), w);
                lines.push(vec![(" ".repeat(indent), Style::default())]);
                used = indent;
                for (t, s) in carry {
                    used += width(&t);
                    lines.last_mut().expect("a line").push((t, s));
                }
                if used + cw > w {
                    lines.push(vec![(" ".repeat(indent), Style::default())]);
                    used = indent;
                }
            }
            let line = lines.last_mut().expect("a line");
            match line.last_mut() {
                Some((t, s)) if s == style => t.push(c),
                _ => line.push((c.to_string(), *style)),
            }
            used += cw;
        }
    }
    lines
        .into_iter()
        .map(|l| Line::from(l.into_iter().map(|(t, s)| Span::styled(t, s)).collect::<Vec<_>>()))
        .collect()
}

/// Splits off the word at the end of `line` (after its last space) if the line has a space
/// and the word is short enough to be worth moving; returns the pieces moved.
fn take_last_word(line: &mut Vec<(String, Style)>, w: usize) -> Vec<(String, Style)> {
    let mut moved: Vec<(String, Style)> = Vec::new();
    let mut moved_w = 0;
    while let Some((text, style)) = line.pop() {
        match text.rfind(' ') {
            Some(i) => {
                let (keep, tail) = text.split_at(i + 1);
                if !tail.is_empty() {
                    moved_w += width(tail);
                    moved.insert(0, (tail.to_string(), style));
                }
                line.push((keep.to_string(), style));
                if moved_w * 2 > w {
                    // Not worth it: put it all back.
                    break;
                }
                return moved;
            }
            None => {
                moved_w += width(&text);
                moved.insert(0, (text, style));
            }
        }
    }
    for piece in moved {
        line.push(piece);
    }
    Vec::new()
}

/// Draws the whole screen.
pub fn render(f: &mut Frame, s: &State, now_ms: i64) {
    let area = f.area();
    if area.width < MIN_W || area.height < MIN_H {
        let text = format!("edgechat: the terminal is too small ({}×{})", area.width, area.height);
        let lines = wrap(&[(text, Style::default())], area.width as usize, 0);
        f.render_widget(Paragraph::new(lines), area);
        return;
    }
    let input_lines = input_rows(s, area.width.saturating_sub(2) as usize);
    let input_h = (input_lines.len().clamp(1, INPUT_ROWS) + 1) as u16;
    let [title, body, notice, input, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(input_h),
        Constraint::Length(1),
    ])
    .areas(area);
    let rooms_w = if area.width >= 50 { (area.width / 5).clamp(14, 24) } else { 0 };
    let members_w =
        if s.members_shown.unwrap_or(area.width >= 90) && area.width >= 60 { 20 } else { 0 };
    let [rooms, messages, members] = Layout::horizontal([
        Constraint::Length(rooms_w),
        Constraint::Min(10),
        Constraint::Length(members_w),
    ])
    .areas(body);
    render_title(f, s, title);
    if rooms_w > 0 {
        render_rooms(f, s, rooms);
    }
    match s.overlay {
        Overlay::None => render_messages(f, s, messages),
        Overlay::Help => render_help(f, messages),
        Overlay::Notifications => render_notifications(f, s, messages),
        Overlay::Search => render_search(f, s, messages),
    }
    if members_w > 0 {
        render_members(f, s, members);
    }
    render_notice(f, s, notice, now_ms);
    render_input(f, s, input, &input_lines);
    render_status(f, s, status, now_ms);
}

fn render_title(f: &mut Frame, s: &State, area: Rect) {
    let line = match s.room() {
        Some(v) => {
            let mut spans =
                vec![Span::styled(v.label(), Style::default().add_modifier(Modifier::BOLD))];
            if v.room.read_only {
                spans.push(Span::styled(" (read-only)", dim()));
            }
            if !v.room.topic.is_empty() {
                spans.push(Span::raw(" — "));
                spans.push(Span::raw(clean(&v.room.topic)));
            }
            Line::from(spans)
        }
        None => Line::from("edgechat — you are in no room yet: /join ROOM or /create NAME"),
    };
    let text: String = line.spans.iter().map(|s| s.content.as_ref()).collect();
    let line = if width(&text) > area.width as usize {
        Line::from(truncate(&text, area.width as usize))
    } else {
        line
    };
    f.render_widget(
        Paragraph::new(line).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn render_rooms(f: &mut Frame, s: &State, area: Rect) {
    let block = Block::default().borders(Borders::RIGHT).border_style(dim());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;
    let mut lines = Vec::new();
    for (i, v) in s.rooms.iter().enumerate() {
        let counts = match (v.room.unread_count, v.room.mention_count) {
            (0, _) => String::new(),
            (u, 0) => format!(" {u}"),
            (u, m) => format!(" {u} @{m}"),
        };
        let name = truncate(&v.label(), w.saturating_sub(width(&counts) + 1));
        let pad = w.saturating_sub(1 + width(&name) + width(&counts));
        let mut style = Style::default();
        if v.room.unread_count > 0 {
            style = style.add_modifier(Modifier::BOLD);
        }
        if i == s.current {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let mark = if i == s.current { ">" } else { " " };
        let count_style = if v.room.mention_count > 0 { style.fg(Color::Yellow) } else { style };
        lines.push(Line::from(vec![
            Span::styled(format!("{mark}{name}{}", " ".repeat(pad)), style),
            Span::styled(counts, count_style),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::styled("(no rooms)", dim()));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// The pieces of one event's line, or `None` for events shown by changing another
/// (edits, deletions).
fn event_pieces(
    s: &State,
    v: &super::state::RoomView,
    e: &proto::RoomEvent,
) -> Option<Vec<(String, Style)>> {
    let time = ((s.time_fmt)(e.at_ms), dim());
    match &e.kind {
        Some(Kind::Message(m)) => {
            let name = s.names.name(&m.sender_id);
            let mut out = vec![(format!("{} ", time.0), time.1)];
            // The seq is what /reply, /react and /pin take; a reply says what it answers.
            out.push((format!("#{} ", e.seq), dim()));
            if m.reply_to_seq != 0 {
                out.push((format!("↪ #{} ", m.reply_to_seq), dim()));
            }
            out.extend([
                (name, Style::default().fg(user_color(&m.sender_id)).add_modifier(Modifier::BOLD)),
                (": ".into(), Style::default()),
            ]);
            if m.deleted {
                out.push(("(deleted)".into(), dim().add_modifier(Modifier::ITALIC)));
                return Some(out);
            }
            let style = if m.mention_user_ids.contains(&s.me) {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default()
            };
            let text = clean_lines(&m.text).join("\n");
            out.push((text, style));
            if m.edited_at_ms != 0 {
                out.push((" (edited)".into(), dim()));
            }
            if m.pinned {
                out.push((" 📌".into(), Style::default()));
            }
            if m.reply_count != 0 {
                let n = m.reply_count;
                out.push((format!(" ({n} repl{})", if n == 1 { "y" } else { "ies" }), dim()));
            }
            if !m.reactions.is_empty() {
                let all: Vec<String> = m
                    .reactions
                    .iter()
                    .map(|r| {
                        format!("{}{} {}", if r.mine { "*" } else { "" }, clean(&r.emoji), r.count)
                    })
                    .collect();
                out.push((format!("  [{}]", all.join("  ")), dim()));
            }
            // Each file on a line of its own, with the id /save takes.
            for a in &m.attachments {
                let line = crate::term::events::file_line(&crate::term::events::File::of(a));
                let style = Style::default().fg(Color::Cyan);
                out.push((format!("\n{}", clean_lines(&line).join(" ")), style));
            }
            Some(out)
        }
        // Shown by changing the message they are about.
        Some(Kind::Edited(_)) | Some(Kind::Deleted(_)) | Some(Kind::Reaction(_)) | None => None,
        Some(_) => {
            let d = crate::term::events::describe(&v.room, e, &s.names);
            let text = match d.kind {
                "member" => clean(&d.text),
                _ => format!("{} {}", d.sender, clean(&d.text)),
            };
            Some(vec![(format!("{} * {text}", time.0), dim())])
        }
    }
}

/// Wraps pieces that may hold newlines: each text line wrapped on its own, continuation
/// lines indented.
fn wrap_multiline(pieces: Vec<(String, Style)>, w: usize) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    let mut current: Vec<(String, Style)> = Vec::new();
    for (text, style) in pieces {
        let mut parts = text.split('\n');
        if let Some(first) = parts.next() {
            current.push((first.to_string(), style));
        }
        for part in parts {
            out.extend(wrap(&current, w, INDENT));
            current = vec![(" ".repeat(INDENT), Style::default()), (part.to_string(), style)];
        }
    }
    out.extend(wrap(&current, w, INDENT));
    out
}

fn pending_pieces(s: &State, p: &Pending) -> Vec<(String, Style)> {
    let mut out = vec![
        ("--:-- ".to_string(), dim()),
        (clean(&s.my_name), Style::default().add_modifier(Modifier::BOLD)),
        (": ".into(), Style::default()),
        (clean_lines(&p.text).join("\n"), dim()),
    ];
    match &p.failed {
        Some(why) => out
            .push((format!(" (not sent: {why}; Ctrl+R retries)"), Style::default().fg(Color::Red))),
        None => out.push((" (sending…)".into(), dim().add_modifier(Modifier::ITALIC))),
    }
    out
}

fn render_messages(f: &mut Frame, s: &State, area: Rect) {
    let w = area.width as usize;
    let h = area.height as usize;
    s.page.set(h);
    let Some(v) = s.room() else {
        s.max_scroll.set(0);
        let lines = wrap(
            &[(
                "Join a room with /join ROOM, create one with /create NAME, or /help.".into(),
                dim(),
            )],
            w,
            0,
        );
        f.render_widget(Paragraph::new(lines), area);
        return;
    };
    // Built from the newest back, only as far as the screen and the scroll reach.
    let want = h + s.scroll;
    let mut rev: Vec<Line<'static>> = Vec::new();
    for p in v.pending.iter().rev() {
        rev.extend(wrap_multiline(pending_pieces(s, p), w).into_iter().rev());
    }
    let mut all_built = true;
    for e in v.events.values().rev() {
        if rev.len() > want {
            all_built = false;
            break;
        }
        if let Some(pieces) = event_pieces(s, v, e) {
            rev.extend(wrap_multiline(pieces, w).into_iter().rev());
        }
    }
    if all_built {
        let top = if v.loading {
            Line::styled("loading older messages…", dim())
        } else if v.history_done || !v.can_load_older() {
            Line::styled(truncate(&format!("— the beginning of {} —", v.label()), w), dim())
        } else {
            Line::styled("(PageUp for older messages)", dim())
        };
        rev.push(top);
    }
    let max_scroll = if all_built { rev.len().saturating_sub(h) } else { usize::MAX / 2 };
    s.max_scroll.set(max_scroll);
    let scroll = s.scroll.min(max_scroll);
    let visible: Vec<Line<'static>> =
        rev.into_iter().skip(scroll).take(h).collect::<Vec<_>>().into_iter().rev().collect();
    // Bottom-aligned: a short history sits just above the input, as in every chat.
    let pad = h.saturating_sub(visible.len());
    let mut lines = vec![Line::default(); pad];
    lines.extend(visible);
    f.render_widget(Paragraph::new(lines), area);
    if scroll > 0 && area.height > 1 {
        let tag = format!(" ↓ {scroll} lines below ");
        let tw = width(&tag).min(w) as u16;
        let r =
            Rect { x: area.x + area.width - tw, y: area.y + area.height - 1, width: tw, height: 1 };
        f.render_widget(
            Paragraph::new(Line::styled(tag, Style::default().add_modifier(Modifier::REVERSED))),
            r,
        );
    }
}

fn render_help(f: &mut Frame, area: Rect) {
    let mut lines = vec![Line::styled(
        "Commands and keys (Esc or F1 closes)",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for l in HELP {
        lines.extend(wrap(&[(l.to_string(), Style::default())], area.width as usize, 4));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn render_notifications(f: &mut Frame, s: &State, area: Rect) {
    let mut lines = vec![Line::styled(
        "Notifications, newest first (Esc or F3 closes)",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if s.notifications.is_empty() {
        lines.push(Line::styled("none yet", dim()));
    }
    for n in &s.notifications {
        let pieces =
            [((s.time_fmt)(n.at_ms) + " ", dim()), (s.notification_text(n), Style::default())];
        lines.extend(wrap(&pieces, area.width as usize, INDENT));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn render_search(f: &mut Frame, s: &State, area: Rect) {
    let r = &s.search;
    let count = match (r.hits.len(), r.more) {
        (1, _) => "1 message".to_string(),
        (n, false) => format!("{n} messages"),
        (n, true) => format!("the newest {n} messages (add words to narrow it)"),
    };
    let head = format!("Search \"{}\": {count}, newest first (Esc closes)", clean(&r.query));
    let mut lines =
        wrap(&[(head, Style::default().add_modifier(Modifier::BOLD))], area.width as usize, 0);
    if r.hits.is_empty() {
        lines.push(Line::styled("no message in your rooms has all of these words", dim()));
    }
    for h in &r.hits {
        let Some(m) = &h.message else { continue };
        let pieces = [
            (format!("{} #{} ", (s.time_fmt)(h.at_ms), s.room_name(&h.room_id)), dim()),
            (s.names.name(&m.sender_id), Style::default().add_modifier(Modifier::BOLD)),
            (format!(": {}", clean(&m.text)), Style::default()),
            (format!("  #{}", h.seq), dim()),
        ];
        lines.extend(wrap(&pieces, area.width as usize, INDENT));
    }
    f.render_widget(Paragraph::new(lines), area);
}

fn render_members(f: &mut Frame, s: &State, area: Rect) {
    let block = Block::default().borders(Borders::LEFT).border_style(dim());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = inner.width as usize;
    let Some(v) = s.room() else { return };
    let Some(members) = &v.members else {
        f.render_widget(Paragraph::new(Line::styled("members…", dim())), inner);
        return;
    };
    use proto::PresenceStatus as P;
    let status =
        |id: &str| P::try_from(s.presence.get(id).copied().unwrap_or(0)).unwrap_or(P::Unspecified);
    let mut sorted: Vec<_> = members.iter().collect();
    sorted.sort_by_key(|m| {
        (status(&m.user_id) != P::Online, status(&m.user_id) != P::Away, s.names.name(&m.user_id))
    });
    let online = sorted.iter().filter(|m| status(&m.user_id) == P::Online).count();
    let mut lines =
        vec![Line::styled(truncate(&format!("{online}/{} online", members.len()), w), dim())];
    for m in sorted {
        let (glyph, color) = match status(&m.user_id) {
            P::Online => ("●", Color::Green),
            P::Away => ("◐", Color::Yellow),
            _ => ("○", Color::DarkGray),
        };
        let role = match proto::RoomRole::try_from(m.role).unwrap_or(proto::RoomRole::Unspecified) {
            proto::RoomRole::Owner => " (owner)",
            proto::RoomRole::Moderator => " (mod)",
            proto::RoomRole::Reader => " (reader)",
            _ => "",
        };
        let name = truncate(&s.names.name(&m.user_id), w.saturating_sub(2 + role.len()));
        lines.push(Line::from(vec![
            Span::styled(format!("{glyph} "), Style::default().fg(color)),
            Span::raw(name),
            Span::styled(role, dim()),
        ]));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn render_notice(f: &mut Frame, s: &State, area: Rect, _now_ms: i64) {
    let w = area.width as usize;
    let line = if let Some((text, is_error)) = &s.flash {
        let style = if *is_error {
            Style::default().fg(Color::Red)
        } else {
            Style::default().fg(Color::Cyan)
        };
        Line::styled(truncate(text, w), style)
    } else {
        let names = s.typing_names();
        let text = match names.as_slice() {
            [] => String::new(),
            [one] => format!("{one} is typing…"),
            [a, b] => format!("{a} and {b} are typing…"),
            [a, rest @ ..] => format!("{a} and {} others are typing…", rest.len()),
        };
        Line::styled(truncate(&text, w), dim().add_modifier(Modifier::ITALIC))
    };
    f.render_widget(Paragraph::new(line), area);
}

/// The input's rows: (byte range of `text`) per screen row, wrapped at `w` cells.
fn input_rows(s: &State, w: usize) -> Vec<(usize, usize)> {
    let w = w.max(1);
    let text = &s.input.text;
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            rows.push((start, i));
            start = i + 1;
            used = 0;
            continue;
        }
        let cw = char_width(display_char(c)).max(1);
        if used + cw > w {
            rows.push((start, i));
            start = i;
            used = 0;
        }
        used += cw;
    }
    rows.push((start, text.len()));
    rows
}

/// Control characters in the input are shown as `·`; they are sent as typed.
fn display_char(c: char) -> char {
    if c.is_control() { '·' } else { c }
}

fn render_input(f: &mut Frame, s: &State, area: Rect, rows: &[(usize, usize)]) {
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(dim())
        .title(Span::styled(" message (Enter sends, Alt+Enter new line, /help) ", dim()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let text = &s.input.text;
    let cursor = s.input.cursor.min(text.len());
    let cur_row = rows.iter().rposition(|(a, _)| *a <= cursor).unwrap_or(0);
    let first = (cur_row + 1).saturating_sub(INPUT_ROWS.min(inner.height as usize).max(1));
    let mut lines = Vec::new();
    for &(a, b) in rows.iter().skip(first).take(inner.height as usize) {
        lines.push(Line::raw(text[a..b].chars().map(display_char).collect::<String>()));
    }
    f.render_widget(Paragraph::new(lines), inner);
    let (a, _) = rows[cur_row];
    let col: usize = text[a..cursor].chars().map(|c| char_width(display_char(c)).max(1)).sum();
    let x = inner.x + (col as u16).min(inner.width.saturating_sub(1));
    let y = inner.y + (cur_row - first) as u16;
    if inner.height > 0 {
        f.set_cursor_position((x, y.min(inner.y + inner.height - 1)));
    }
}

fn render_status(f: &mut Frame, s: &State, area: Rect, now_ms: i64) {
    let host = s.server.split_once("://").map(|(_, h)| h).unwrap_or(&s.server);
    let (state, color) = match &s.conn {
        Conn::Connecting => ("connecting…".to_string(), Color::Yellow),
        Conn::Connected => ("connected".to_string(), Color::Green),
        Conn::Reconnecting { at_ms, error } => {
            let secs = ((at_ms - now_ms).max(0) + 999) / 1000;
            let when = if secs == 0 {
                "reconnecting…".to_string()
            } else {
                format!("offline, reconnecting in {secs} s")
            };
            (format!("{when} ({error})"), Color::Red)
        }
    };
    let mut extras = Vec::new();
    if s.away {
        extras.push(" · away".to_string());
    }
    let elsewhere = s.unread_elsewhere();
    if elsewhere > 0 {
        extras.push(format!(" · {elsewhere} unread elsewhere"));
    }
    if s.unseen_notifications > 0 {
        extras.push(format!(" · {} new (F3)", s.unseen_notifications));
    }
    extras.push(" · F1 help".into());
    let head = format!(" {} @ {host} · {} · ", clean(&s.my_name), s.transport);
    let w = area.width as usize;
    // The connection state comes first; the extras follow while they fit.
    let state = truncate(&state, w.saturating_sub(width(&head)));
    let mut used = width(&head) + width(&state);
    let mut spans =
        vec![Span::raw(truncate(&head, w)), Span::styled(state, Style::default().fg(color))];
    for x in extras {
        if used + width(&x) > w {
            break;
        }
        used += width(&x);
        spans.push(Span::raw(x));
    }
    let line = Line::from(spans);
    f.render_widget(
        Paragraph::new(line).style(Style::default().add_modifier(Modifier::REVERSED)),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::super::state::tests::{key, message, two_rooms};
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn utc_hm(ms: i64) -> String {
        let mins = ms.div_euclid(60_000);
        format!("{:02}:{:02}", mins.div_euclid(60).rem_euclid(24), mins.rem_euclid(60))
    }

    /// A screen with a little of everything: unread and mentions elsewhere, an edited and a
    /// deleted message, a join, a pending and a failed send, members with presence, typing.
    fn busy() -> State {
        let mut s = two_rooms();
        s.time_fmt = utc_hm;
        use proto::{PresenceStatus as P, RoomRole as R};
        let people = [
            ("ume", "alice", R::Owner, P::Online),
            ("ubob", "bob", R::Member, P::Away),
            ("ucat", "carol", R::Moderator, P::Offline),
        ];
        let members = people
            .iter()
            .map(|(id, name, role, presence)| proto::Member {
                user: Some(proto::User {
                    id: id.to_string(),
                    username: name.to_string(),
                    ..Default::default()
                }),
                role: *role as i32,
                presence: *presence as i32,
                last_seen_ms: 0,
            })
            .collect();
        s.on_members("r1", members);
        let mut events: Vec<_> = vec![
            message("r1", 1, "ubob", "good morning"),
            message("r1", 2, "ume", "morning! the build is green again"),
            message("r1", 3, "ucat", &format!("a long line that wraps: {}", "word ".repeat(30))),
            message("r1", 4, "ubob", "oops, wrong room"),
            message("r1", 5, "ucat", "tabs\tand\x1b[31m escapes\nand a second line"),
        ];
        if let Some(Kind::Message(m)) = &mut events[1].kind {
            m.edited_at_ms = 1;
            m.attachments = vec![proto::Attachment {
                id: "f7".into(),
                name: "plan\u{202e}.png".into(),
                size: 123_456,
                media_type: "image/png".into(),
                width: 640,
                height: 480,
                ..Default::default()
            }];
        }
        if let Some(Kind::Message(m)) = &mut events[3].kind {
            m.deleted = true;
        }
        if let Some(Kind::Message(m)) = &mut events[0].kind {
            m.reply_count = 2;
            m.pinned = true;
            m.reactions = vec![
                proto::Reaction { emoji: "👍".into(), count: 2, mine: true },
                proto::Reaction { emoji: "🎉".into(), count: 1, mine: false },
            ];
        }
        if let Some(Kind::Message(m)) = &mut events[2].kind {
            m.reply_to_seq = 1;
            m.thread_seq = 1;
        }
        s.on_history("r1", events, false);
        s.rooms[0].pending.push(Pending {
            cmid: "p1".into(),
            text: "on its way".into(),
            failed: None,
            acked: None,
        });
        s.rooms[0].pending.push(Pending {
            cmid: "p2".into(),
            text: "too many".into(),
            failed: Some("RESOURCE_EXHAUSTED: slow down".into()),
            acked: None,
        });
        s.rooms[0].room.topic = "Release day".into();
        s.rooms[1].room.unread_count = 4;
        s.rooms[1].room.mention_count = 1;
        s.on_typing("r1", "ubob", 0);
        s.conn = Conn::Connected;
        s.input.text = "draft reply".into();
        s.input.cursor = 5;
        s
    }

    fn draw(s: &State, w: u16, h: u16, now: i64) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, s, now)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                let mut line = String::new();
                let mut x = 0;
                while x < w {
                    let sym = buf[(x, y)].symbol();
                    line.push_str(sym);
                    x += (width(sym).max(1)) as u16;
                }
                line.trim_end().to_string()
            })
            .collect()
    }

    /// Compares with `snapshots/NAME.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, lines: &[String]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/term/chat/snapshots")
            .join(format!("{name}.txt"));
        let got = lines.join("\n") + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("no {}: run with UPDATE_SNAPSHOTS=1", path.display()));
        assert_eq!(got, want, "{name} differs from its snapshot:\n{got}");
    }

    #[test]
    fn snapshot_80x24() {
        let lines = draw(&busy(), 80, 24, 0);
        snapshot("busy-80x24", &lines);
        let screen = lines.join("\n");
        assert!(screen.contains(" #random   4 @1│"), "{screen}");
        assert!(!screen.contains("online"), "no member list at 80 columns");
    }

    #[test]
    fn snapshot_120x40() {
        let lines = draw(&busy(), 120, 40, 0);
        snapshot("busy-120x40", &lines);
        let screen = lines.join("\n");
        for want in [
            "#general — Release day",
            "#1 bob: good morning 📌 (2 replies)  [*👍 2  🎉 1]",
            "#3 ↪ #1 carol: a long line",
            "alice: morning! the build is green again (edited)",
            "bob: (deleted)",
            "carol: tabs    and^[[31m escapes",
            "📎 plan\\u{202e}.png (120.6 KB, 640x480) f7",
            "      and a second line",
            "alice: on its way (sending…)",
            "(not sent: RESOURCE_EXHAUSTED: slow down; Ctrl+R",
            "● alice (owner)",
            "◐ bob",
            "○ carol (mod)",
            "bob is typing…",
            "HTTP/2 · connected · 4 unread elsewhere",
            "draft reply",
        ] {
            assert!(screen.contains(want), "{want:?} missing:\n{screen}");
        }
    }

    #[test]
    fn search_results_cover_the_messages_until_esc() {
        let mut s = busy();
        let hit = |room: &str, seq: u64, sender: &str, text: &str| {
            let Some(Kind::Message(m)) = message(room, seq, sender, text).kind else {
                unreachable!()
            };
            proto::SearchHit {
                room_id: room.into(),
                seq,
                at_ms: 60_000 * seq as i64,
                message: Some(m),
            }
        };
        s.on_search(
            "deploy \x1b[2J".into(),
            proto::SearchResponse {
                hits: vec![
                    hit("r2", 7, "ubob", "deploy at five"),
                    hit("r1", 2, "ume", "deploy\x1b[31m done"),
                ],
                next_page_token: "x".into(),
            },
        );
        let screen = draw(&s, 100, 30, 0).join("\n");
        for want in [
            "Search \"deploy ^[[2J\": the newest 2 messages",
            "narrow it), newest first (Esc closes)",
            "00:07 #random bob: deploy at five  #7",
            "00:02 #general alice: deploy^[[31m done  #2",
        ] {
            assert!(screen.contains(want), "{want:?} missing:\n{screen}");
        }
        assert!(!screen.contains("good morning"), "the overlay covers the messages:\n{screen}");
        s.on_search("nothing".into(), proto::SearchResponse::default());
        let screen = draw(&s, 100, 30, 0).join("\n");
        assert!(screen.contains("Search \"nothing\": 0 messages"), "{screen}");
        assert!(screen.contains("no message in your rooms has all of these words"), "{screen}");
        s.key(key(crossterm::event::KeyCode::Esc), 0);
        assert_eq!(s.overlay, Overlay::None);
    }

    #[test]
    fn offline_shows_the_countdown() {
        let mut s = busy();
        s.on_disconnected("UNAVAILABLE: connection refused", 3_500);
        let screen = draw(&s, 100, 30, 1_000).join("\n");
        assert!(
            screen.contains("offline, reconnecting in 3 s (UNAVAILABLE: connection refused)"),
            "{screen}"
        );
    }

    #[test]
    fn every_size_draws_without_panicking() {
        let mut s = busy();
        s.input.text = format!("{}\n{}", "x".repeat(300), "界".repeat(100));
        s.input.cursor = s.input.text.len();
        for w in 0..=130u16 {
            for h in [0u16, 1, 2, 5, 6, 7, 8, 10, 24] {
                draw(&s, w, h, 0);
            }
        }
        let tiny = draw(&s, 20, 5, 0).join("\n");
        assert!(tiny.contains("too") && tiny.contains("small (20×5)"), "{tiny}");
        s.scroll = 1_000;
        let screen = draw(&s, 80, 24, 0).join("\n");
        assert!(screen.contains("the beginning of #general"), "{screen}");
    }

    #[test]
    fn wrapping_counts_cells_and_breaks_at_spaces() {
        let lines = wrap(&[("aaa bbb ccc".into(), Style::default())], 8, 2);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["aaa bbb ", "  ccc"]);
        let wide = wrap(&[("界界界界界".into(), Style::default())], 4, 0);
        assert_eq!(wide.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["界界", "界界", "界"]);
        let long = wrap(&[("x".repeat(25), Style::default())], 10, 6);
        assert!(long.iter().all(|l| width(&l.to_string()) <= 10));
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ab", 4), "ab");
    }
}
