//! Everything `edgechat chat` shows and how keys and server frames change it, as plain data:
//! no terminal, no sockets, time passed in. The runner (`run`) turns [`Action`]s into frames
//! and calls, and feeds what comes back into [`State`].

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};

use super::commands::{self, Command};
use crate::proto::{self, room_event::Kind};
use crate::term::names::Names;

/// Events kept per room; older ones are dropped (when the room is not scrolled back) and
/// loaded again from History on demand.
pub const MAX_EVENTS_PER_ROOM: usize = 3000;
/// Unacknowledged and failed sends per room; beyond it a new send is refused with a message.
pub const MAX_PENDING_PER_ROOM: usize = 100;
/// Notifications kept (newest first); older ones fall off.
pub const MAX_NOTIFICATIONS: usize = 50;
/// Input history entries; the oldest falls off.
pub const MAX_INPUT_HISTORY: usize = 100;
/// Input size in bytes; typing beyond it is refused (the server's own limit is lower).
pub const MAX_INPUT_BYTES: usize = 16 * 1024;
/// Presence entries (users sharing a room with us); cleared when full.
pub const MAX_PRESENCE: usize = 10_000;
/// How long a typing indicator shows without a new TypingUpdate.
pub const TYPING_SHOWN_MS: i64 = 6_000;
/// At most one Typing frame per room this often.
pub const TYPING_EVERY_MS: i64 = 3_000;
/// History page size.
pub const HISTORY_PAGE: u32 = 100;

/// What the runner must do after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a message (remembered by the session until acknowledged).
    Send {
        /// Room id.
        room: String,
        /// Its idempotency key.
        cmid: String,
        /// The text.
        text: String,
    },
    /// A slash command that needs the server, about `room` (the current room, if any).
    Run(Command, Option<String>),
    /// Tell the room we are typing.
    Typing(String),
    /// Move the read marker.
    MarkRead(String, u64),
    /// Fetch the events of `room` just below `before`.
    LoadOlder {
        /// Room id.
        room: String,
        /// Exclusive upper bound.
        before: u64,
    },
    /// Fetch the room's member list.
    LoadMembers(String),
    /// Fetch the room list again (an invite, a removal, a reconnect).
    RefreshRooms,
    /// Follow a room from after this seq.
    Subscribe(String, u64),
    /// Stop following a room.
    Unsubscribe(String),
    /// Set our presence.
    SetAway(bool),
    /// Leave `edgechat chat`.
    Quit,
}

/// The stream's state, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    /// Not connected yet.
    Connecting,
    /// Connected; every room followed.
    Connected,
    /// Lost; the next attempt starts at `at_ms`.
    Reconnecting {
        /// When the next attempt starts.
        at_ms: i64,
        /// What went wrong.
        error: String,
    },
}

/// One of our sends not yet seen as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Idempotency key.
    pub cmid: String,
    /// The text.
    pub text: String,
    /// The server refused it (code: message); Ctrl+R sends it again.
    pub failed: Option<String>,
    /// Acknowledged at this seq (the event is on its way).
    pub acked: Option<u64>,
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// User id.
    pub user_id: String,
    /// Room role.
    pub role: i32,
}

/// A room we are in, with what we hold of it.
#[derive(Debug, Clone, Default)]
pub struct RoomView {
    /// The room as the server last described it; `unread_count`, `mention_count` and
    /// `last_seq` are kept current by events.
    pub room: proto::Room,
    /// Events by seq: a contiguous range up to the newest received.
    pub events: BTreeMap<u64, proto::RoomEvent>,
    /// No older events exist (History said so).
    pub history_done: bool,
    /// A History call for older events is in flight.
    pub loading: bool,
    /// Our sends not yet seen as events, in order.
    pub pending: Vec<Pending>,
    /// Members, once loaded.
    pub members: Option<Vec<MemberView>>,
    /// User id -> when their typing indicator ends.
    pub typing: HashMap<String, i64>,
}

impl RoomView {
    fn new(room: proto::Room) -> RoomView {
        let history_done = room.last_seq == 0;
        RoomView { room, history_done, ..RoomView::default() }
    }

    /// The seq History pages down from.
    pub fn oldest(&self) -> u64 {
        self.events.keys().next().copied().unwrap_or(self.room.last_seq + 1)
    }

    /// Whether older events could be loaded.
    pub fn can_load_older(&self) -> bool {
        !self.history_done && !self.loading && self.oldest() > self.room.first_seq.max(1)
    }

    /// The room's name for lists and titles (cleaned).
    pub fn label(&self) -> String {
        let name = crate::term::text::clean(&self.room.name);
        if self.room.visibility == proto::Visibility::Direct as i32 {
            format!("@{name}")
        } else {
            format!("#{name}")
        }
    }
}

/// The input line (possibly several lines) with its history.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The text typed.
    pub text: String,
    /// Cursor, a byte offset into `text` on a char boundary.
    pub cursor: usize,
    history: VecDeque<String>,
    browsing: Option<usize>,
    draft: String,
}

impl Input {
    fn insert(&mut self, s: &str) -> bool {
        if self.text.len() + s.len() > MAX_INPUT_BYTES {
            return false;
        }
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
        true
    }

    fn prev_boundary(&self) -> usize {
        self.text[..self.cursor].char_indices().next_back().map(|(i, _)| i).unwrap_or(0)
    }

    fn next_boundary(&self) -> usize {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
            .unwrap_or(self.cursor)
    }

    fn take(&mut self) -> String {
        self.cursor = 0;
        self.browsing = None;
        std::mem::take(&mut self.text)
    }

    fn remember(&mut self, line: &str) {
        if self.history.back().map(String::as_str) != Some(line) {
            if self.history.len() == MAX_INPUT_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(line.to_string());
        }
    }

    fn set(&mut self, text: String) {
        self.cursor = text.len();
        self.text = text;
    }

    fn history_up(&mut self) {
        let i = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(0) => 0,
            Some(i) => i - 1,
        };
        self.browsing = Some(i);
        self.set(self.history[i].clone());
    }

    fn history_down(&mut self) {
        match self.browsing {
            None => {}
            Some(i) if i + 1 < self.history.len() => {
                self.browsing = Some(i + 1);
                self.set(self.history[i + 1].clone());
            }
            Some(_) => {
                self.browsing = None;
                let draft = std::mem::take(&mut self.draft);
                self.set(draft);
            }
        }
    }
}

/// All of the chat screen's state.
pub struct State {
    /// Our user id.
    pub me: String,
    /// Our username.
    pub my_name: String,
    /// The server, for the status line.
    pub server: String,
    /// "HTTP/2" or "HTTP/3".
    pub transport: &'static str,
    /// Our rooms, in list order.
    pub rooms: Vec<RoomView>,
    /// Every room ListRooms returned (ours and public ones), for `/join`.
    pub known_rooms: Vec<proto::Room>,
    /// Index into `rooms`.
    pub current: usize,
    /// User names.
    pub names: Names,
    /// User id -> presence status.
    pub presence: HashMap<String, i32>,
    /// Connection state.
    pub conn: Conn,
    /// The input.
    pub input: Input,
    /// A message for the user (text, is it an error), until the next key.
    pub flash: Option<(String, bool)>,
    /// Newest first.
    pub notifications: VecDeque<proto::Notification>,
    /// Notifications that came since the user last looked (F3).
    pub unseen_notifications: usize,
    /// Lines scrolled up from the bottom of the current room.
    pub scroll: usize,
    /// Overlay: `/help`, the notification list or search results.
    pub overlay: Overlay,
    /// The last `/search`'s results (shown while `overlay` is `Search`).
    pub search: SearchResults,
    /// Whether we set ourselves away.
    pub away: bool,
    /// Member list shown (None: shown when the terminal is wide enough).
    pub members_shown: Option<bool>,
    /// Formats a time for messages (local HH:MM; tests pass UTC).
    pub time_fmt: fn(i64) -> String,
    /// Set by the renderer: the most the current room can scroll, and the page height.
    pub max_scroll: Cell<usize>,
    /// Set by the renderer: message lines on screen.
    pub page: Cell<usize>,
    last_typing: HashMap<String, i64>,
    wanted_room: Option<String>,
}

/// What covers the message pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// Nothing.
    None,
    /// The help text.
    Help,
    /// The notification list.
    Notifications,
    /// The last `/search`'s results.
    Search,
}

/// The last `/search`: its words and what came back (the first page).
#[derive(Debug, Clone, Default)]
pub struct SearchResults {
    /// What was typed.
    pub query: String,
    /// Newest first.
    pub hits: Vec<proto::SearchHit>,
    /// Whether there were more than the page shown.
    pub more: bool,
}

impl State {
    /// A fresh state; `wanted_room` is the room named on the command line, made current once
    /// the room list arrives.
    pub fn new(
        me: &str,
        my_name: &str,
        server: &str,
        transport: &'static str,
        wanted_room: Option<String>,
    ) -> State {
        State {
            me: me.into(),
            my_name: my_name.into(),
            server: server.into(),
            transport,
            rooms: Vec::new(),
            known_rooms: Vec::new(),
            current: 0,
            names: Names::default(),
            presence: HashMap::new(),
            conn: Conn::Connecting,
            input: Input::default(),
            flash: None,
            notifications: VecDeque::new(),
            unseen_notifications: 0,
            scroll: 0,
            overlay: Overlay::None,
            search: SearchResults::default(),
            away: false,
            members_shown: None,
            time_fmt: crate::term::text::local_hm,
            max_scroll: Cell::new(0),
            page: Cell::new(10),
            last_typing: HashMap::new(),
            wanted_room,
        }
    }

    /// The current room, if we are in any.
    pub fn room(&self) -> Option<&RoomView> {
        self.rooms.get(self.current)
    }

    fn room_mut(&mut self, id: &str) -> Option<&mut RoomView> {
        self.rooms.iter_mut().find(|r| r.room.id == id)
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.rooms.iter().position(|r| r.room.id == id)
    }

    /// Shows a message until the next key.
    pub fn say(&mut self, text: impl Into<String>) {
        self.flash = Some((text.into(), false));
    }

    /// Shows an error until the next key.
    pub fn error(&mut self, text: impl Into<String>) {
        self.flash = Some((text.into(), true));
    }

    /// A new room list from ListRooms: rooms we joined are followed from the list's
    /// `last_seq`, rooms we left are dropped; counts come from the server.
    pub fn set_rooms(&mut self, list: Vec<proto::Room>) -> Vec<Action> {
        let mut actions = Vec::new();
        let current_id = self.room().map(|r| r.room.id.clone());
        let mut mine: Vec<&proto::Room> = list.iter().filter(|r| r.my_role != 0).collect();
        // Named rooms by name, then direct rooms.
        mine.sort_by_key(|r| {
            (r.visibility == proto::Visibility::Direct as i32, r.name.to_lowercase())
        });
        let mut next = Vec::with_capacity(mine.len());
        for r in mine {
            match self.rooms.iter().position(|v| v.room.id == r.id) {
                Some(i) => {
                    let mut v = std::mem::take(&mut self.rooms[i]);
                    let last_seq = v.room.last_seq.max(r.last_seq);
                    v.room = r.clone();
                    v.room.last_seq = last_seq;
                    next.push(v);
                }
                None => {
                    actions.push(Action::Subscribe(r.id.clone(), r.last_seq));
                    next.push(RoomView::new(r.clone()));
                }
            }
        }
        for old in &self.rooms {
            if !old.room.id.is_empty() && !next.iter().any(|v| v.room.id == old.room.id) {
                actions.push(Action::Unsubscribe(old.room.id.clone()));
            }
        }
        self.rooms = next;
        self.known_rooms = list;
        let wanted = self.wanted_room.take();
        let target = wanted.as_deref().or(current_id.as_deref());
        let before = self.current;
        self.current = target.and_then(|id| self.index_of(id)).unwrap_or(0);
        if let Some(w) = &wanted
            && self.index_of(w).is_none()
        {
            self.error(format!("you are not in room {}", crate::term::text::clean(w)));
        }
        if current_id.as_deref() != self.room().map(|r| r.room.id.as_str())
            || before != self.current
        {
            self.scroll = 0;
        }
        actions.extend(self.opened());
        actions
    }

    /// Makes the room with id `id` current (after /join, /create, /dm), once it is listed.
    pub fn want_room(&mut self, id: &str) -> Vec<Action> {
        match self.index_of(id) {
            Some(i) => self.switch_to(i),
            None => {
                self.wanted_room = Some(id.into());
                vec![Action::RefreshRooms]
            }
        }
    }

    fn switch_to(&mut self, i: usize) -> Vec<Action> {
        if i >= self.rooms.len() || i == self.current {
            return Vec::new();
        }
        self.current = i;
        self.scroll = 0;
        self.overlay = Overlay::None;
        self.opened()
    }

    /// What the current room needs once shown: history, members, the read marker.
    fn opened(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(v) = self.rooms.get_mut(self.current) else { return actions };
        if v.events.is_empty() && v.can_load_older() {
            v.loading = true;
            actions.push(Action::LoadOlder { room: v.room.id.clone(), before: v.oldest() });
        }
        if v.members.is_none() {
            actions.push(Action::LoadMembers(v.room.id.clone()));
        }
        actions.extend(self.mark_read());
        actions
    }

    /// Marks the current room read up to its newest event when it is looked at (not scrolled
    /// back) and has something unread.
    fn mark_read(&mut self) -> Option<Action> {
        let scroll = self.scroll;
        let v = self.rooms.get_mut(self.current)?;
        if scroll > 0 || (v.room.unread_count == 0 && v.room.mention_count == 0) {
            return None;
        }
        v.room.unread_count = 0;
        v.room.mention_count = 0;
        Some(Action::MarkRead(v.room.id.clone(), v.room.last_seq))
    }

    /// A page of History for `room` (older events, ascending).
    pub fn on_history(&mut self, room: &str, events: Vec<proto::RoomEvent>, has_more: bool) {
        let Some(v) = self.room_mut(room) else { return };
        v.loading = false;
        if !has_more {
            v.history_done = true;
        }
        for e in events {
            v.room.last_seq = v.room.last_seq.max(e.seq);
            v.events.entry(e.seq).or_insert(e);
        }
        // Edits and deletions of messages we now hold are already in their text.
    }

    /// History failed: allow another try.
    pub fn on_history_failed(&mut self, room: &str) {
        if let Some(v) = self.room_mut(room) {
            v.loading = false;
        }
    }

    /// A room's member list (with presence).
    pub fn on_members(&mut self, room: &str, members: Vec<proto::Member>) {
        for m in &members {
            if let Some(u) = &m.user {
                self.names.learn(u);
                self.set_presence(&u.id, m.presence);
            }
        }
        if let Some(v) = self.room_mut(room) {
            let list = members
                .iter()
                .filter_map(|m| {
                    m.user.as_ref().map(|u| MemberView { user_id: u.id.clone(), role: m.role })
                })
                .collect();
            v.members = Some(list);
        }
    }

    fn set_presence(&mut self, user: &str, status: i32) {
        if self.presence.len() >= MAX_PRESENCE && !self.presence.contains_key(user) {
            self.presence.clear();
        }
        self.presence.insert(user.into(), status);
    }

    /// A presence change.
    pub fn on_presence(&mut self, p: &proto::Presence) {
        self.set_presence(&p.user_id, p.status);
    }

    /// Someone is typing.
    pub fn on_typing(&mut self, room: &str, user: &str, now_ms: i64) {
        if user == self.me {
            return;
        }
        if let Some(v) = self.room_mut(room) {
            v.typing.insert(user.into(), now_ms + TYPING_SHOWN_MS);
        }
    }

    /// Drops typing indicators that ran out.
    pub fn tick(&mut self, now_ms: i64) {
        for v in &mut self.rooms {
            v.typing.retain(|_, until| *until > now_ms);
        }
    }

    /// A room event (live or replayed), in seq order per room.
    pub fn on_event(&mut self, e: proto::RoomEvent) -> Vec<Action> {
        let mut actions = Vec::new();
        let me = self.me.clone();
        let is_current = self.room().map(|r| r.room.id == e.room_id).unwrap_or(false);
        let scroll = self.scroll;
        let unknown_member =
            matches!(&e.kind, Some(Kind::Member(m)) if !self.names.knows(&m.user_id));
        let Some(v) = self.room_mut(&e.room_id) else { return actions };
        let fresh = e.seq > v.room.last_seq;
        v.room.last_seq = v.room.last_seq.max(e.seq);
        match &e.kind {
            Some(Kind::Message(m)) => {
                v.typing.remove(&m.sender_id);
                if fresh
                    && m.thread_seq != 0
                    && let Some(Some(Kind::Message(root))) =
                        v.events.get_mut(&m.thread_seq).map(|t| t.kind.as_mut())
                {
                    root.reply_count += 1;
                    root.last_reply_at_ms = m.sent_at_ms;
                }
                if m.sender_id == me {
                    v.pending.retain(|p| p.cmid != m.client_message_id);
                } else if fresh {
                    v.room.unread_count += 1;
                    if m.mention_user_ids.contains(&me) {
                        v.room.mention_count += 1;
                    }
                }
            }
            Some(Kind::Edited(x)) => {
                if let Some(Some(Kind::Message(m))) =
                    v.events.get_mut(&x.target_seq).map(|t| t.kind.as_mut())
                {
                    m.text = x.text.clone();
                    m.edited_at_ms = e.at_ms;
                }
            }
            Some(Kind::Deleted(x)) => {
                if let Some(Some(Kind::Message(m))) =
                    v.events.get_mut(&x.target_seq).map(|t| t.kind.as_mut())
                {
                    m.text.clear();
                    m.deleted = true;
                    m.reactions.clear();
                    m.pinned = false;
                }
            }
            Some(Kind::Reaction(x)) => {
                if let Some(Some(Kind::Message(m))) =
                    v.events.get_mut(&x.target_seq).map(|t| t.kind.as_mut())
                {
                    count_reaction(m, &x.emoji, x.added, e.actor_id == me);
                }
            }
            Some(Kind::Pin(x)) => {
                if let Some(Some(Kind::Message(m))) =
                    v.events.get_mut(&x.target_seq).map(|t| t.kind.as_mut())
                {
                    m.pinned = x.pinned;
                }
            }
            Some(Kind::Member(m)) => {
                if let Some(list) = &mut v.members {
                    list.retain(|x| x.user_id != m.user_id);
                    if !(m.left || m.removed) {
                        list.push(MemberView { user_id: m.user_id.clone(), role: m.role });
                    }
                }
                if unknown_member {
                    // Learned from the member list on the next load.
                    v.members = None;
                }
                if m.user_id == me && (m.left || m.removed) {
                    let why = if m.banned {
                        "you were banned from"
                    } else if m.removed {
                        "you were removed from"
                    } else {
                        "you left"
                    };
                    let text = format!("{why} {}", v.label());
                    actions.push(Action::RefreshRooms);
                    v.events.insert(e.seq, e);
                    self.say(text);
                    return actions;
                }
            }
            Some(Kind::RoomUpdated(u)) => {
                if let Some(r) = &u.room {
                    v.room.topic = r.topic.clone();
                    v.room.read_only = r.read_only;
                }
            }
            None => {}
        }
        v.events.insert(e.seq, e);
        if v.events.len() > MAX_EVENTS_PER_ROOM && !(is_current && scroll > 0) {
            v.events.pop_first();
            v.history_done = false;
        }
        if v.pending.iter().any(|p| p.acked.is_some_and(|s| v.events.contains_key(&s))) {
            v.pending.retain(|p| !p.acked.is_some_and(|s| v.events.contains_key(&s)));
        }
        if is_current {
            actions.extend(self.mark_read());
        }
        actions
    }

    /// A send was stored at `seq`.
    pub fn on_ack(&mut self, ack: &proto::SendAck) {
        if let Some(v) = self.room_mut(&ack.room_id) {
            let seen = v.events.contains_key(&ack.seq);
            v.pending.retain(|p| !(p.cmid == ack.client_message_id && seen));
            for p in v.pending.iter_mut().filter(|p| p.cmid == ack.client_message_id) {
                p.acked = Some(ack.seq);
                p.failed = None;
            }
        }
    }

    /// A per-frame error: a failed send is marked; others are shown.
    pub fn on_stream_error(&mut self, e: &proto::StreamError) -> Vec<Action> {
        let text = format!(
            "{}: {}",
            crate::term::text::clean(&e.code),
            crate::term::text::clean(&e.message)
        );
        if !e.client_message_id.is_empty()
            && let Some(v) = self.room_mut(&e.room_id)
            && let Some(p) = v.pending.iter_mut().find(|p| p.cmid == e.client_message_id)
        {
            p.failed = Some(text);
            return Vec::new();
        }
        self.error(text);
        // A room we can no longer follow (removed while away): the list says what is left.
        if !e.room_id.is_empty() && e.code == "PERMISSION_DENIED" {
            return vec![Action::RefreshRooms];
        }
        Vec::new()
    }

    /// Our read marker moved (on this or another device).
    pub fn on_read_marker(&mut self, m: &proto::ReadMarker) {
        if let Some(v) = self.room_mut(&m.room_id) {
            v.room.unread_count = m.unread_count;
            v.room.mention_count = m.mention_count;
        }
    }

    /// A notification as one line of text (cleaned).
    pub fn notification_text(&self, n: &proto::Notification) -> String {
        use proto::NotificationKind as K;
        let from = self.names.name(&n.from_user_id);
        let room = self
            .known_rooms
            .iter()
            .find(|r| r.id == n.room_id)
            .map(|r| crate::term::text::clean(&r.name))
            .unwrap_or_else(|| "a room".into());
        let text = crate::term::text::clean(&n.text);
        match K::try_from(n.kind).unwrap_or(K::Unspecified) {
            K::Mention => format!("{from} mentioned you in #{room}: {text}"),
            K::DirectMessage => format!("{from} wrote to you: {text}"),
            K::Invite => format!("{from} invited you to #{room}"),
            K::Removed => format!("you were removed from #{room}"),
            K::RoleChanged => format!("your role in #{room} changed"),
            K::Reply => format!("{from} replied to you in #{room}: {text}"),
            K::Unspecified => text,
        }
    }

    /// A `/search`'s first page: shown over the messages until Esc.
    pub fn on_search(&mut self, query: String, page: proto::SearchResponse) {
        self.search =
            SearchResults { query, more: !page.next_page_token.is_empty(), hits: page.hits };
        self.overlay = Overlay::Search;
    }

    /// The name of a room we know (its id when we do not, e.g. one left since).
    pub fn room_name(&self, id: &str) -> String {
        self.known_rooms
            .iter()
            .find(|r| r.id == id)
            .map(|r| crate::term::text::clean(&r.name))
            .unwrap_or_else(|| crate::term::text::clean(id))
    }

    /// A notification of ours.
    pub fn on_notification(&mut self, n: proto::Notification) -> Vec<Action> {
        use proto::NotificationKind as K;
        let kind = K::try_from(n.kind).unwrap_or(K::Unspecified);
        let line = self.notification_text(&n);
        let refresh = matches!(kind, K::Invite | K::Removed | K::RoleChanged);
        if self.notifications.len() == MAX_NOTIFICATIONS {
            self.notifications.pop_back();
        }
        self.notifications.push_front(n);
        self.unseen_notifications += 1;
        self.say(line);
        if refresh { vec![Action::RefreshRooms] } else { Vec::new() }
    }

    /// The stream is up (again).
    pub fn on_connected(&mut self) -> Vec<Action> {
        let was_down = matches!(self.conn, Conn::Reconnecting { .. });
        self.conn = Conn::Connected;
        if was_down {
            self.say("reconnected");
        }
        // Rooms joined or left while we were away, and fresh counts.
        vec![Action::RefreshRooms]
    }

    /// The stream is down; the session retries at `at_ms`.
    pub fn on_disconnected(&mut self, error: &str, at_ms: i64) {
        self.conn = Conn::Reconnecting { at_ms, error: crate::term::text::clean(error) };
    }

    /// The mouse.
    pub fn mouse(&mut self, m: MouseEvent) -> Vec<Action> {
        match m.kind {
            MouseEventKind::ScrollUp => self.scroll_by(3),
            MouseEventKind::ScrollDown => self.scroll_by(-3),
            _ => Vec::new(),
        }
    }

    /// Pasted text goes into the input as typed, newlines and all.
    pub fn paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        if !self.input.insert(&text) {
            self.error(format!("too long to paste: the input holds {MAX_INPUT_BYTES} bytes"));
        }
    }

    fn scroll_by(&mut self, lines: isize) -> Vec<Action> {
        let max = self.max_scroll.get();
        let want = self.scroll as isize + lines;
        self.scroll = want.clamp(0, max as isize) as usize;
        let mut actions = Vec::new();
        if lines > 0
            && want >= max as isize
            && let Some(v) = self.rooms.get_mut(self.current)
            && v.can_load_older()
        {
            v.loading = true;
            actions.push(Action::LoadOlder { room: v.room.id.clone(), before: v.oldest() });
        }
        if self.scroll == 0 {
            actions.extend(self.mark_read());
        }
        actions
    }

    /// A key.
    pub fn key(&mut self, k: KeyEvent, now_ms: i64) -> Vec<Action> {
        use KeyCode as C;
        if k.kind == crossterm::event::KeyEventKind::Release {
            return Vec::new();
        }
        self.flash = None;
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        let n = self.rooms.len().max(1);
        match k.code {
            C::Char('c') if ctrl => return vec![Action::Quit],
            C::Char('d') if ctrl && self.input.text.is_empty() => return vec![Action::Quit],
            C::Char('r') if ctrl => return self.retry(),
            C::Char('j') if ctrl => {
                self.input.insert("\n");
            }
            C::Enter if alt || k.modifiers.contains(KeyModifiers::SHIFT) => {
                self.input.insert("\n");
            }
            C::Enter => return self.submit(),
            C::Tab => return self.switch_to((self.current + 1) % n),
            C::BackTab => return self.switch_to((self.current + n - 1) % n),
            C::Down if alt => return self.switch_to((self.current + 1) % n),
            C::Up if alt => return self.switch_to((self.current + n - 1) % n),
            C::Char(d @ '1'..='9') if alt => {
                return self.switch_to(d as usize - '1' as usize);
            }
            C::PageUp => return self.scroll_by(self.page.get().saturating_sub(2).max(1) as isize),
            C::PageDown => {
                return self.scroll_by(-(self.page.get().saturating_sub(2).max(1) as isize));
            }
            C::End if ctrl => return self.scroll_by(-(self.scroll as isize)),
            C::F(1) => self.overlay = toggle(self.overlay, Overlay::Help),
            C::F(2) => {
                let shown = self.members_shown.unwrap_or(true);
                self.members_shown = Some(!shown);
            }
            C::F(3) => {
                self.overlay = toggle(self.overlay, Overlay::Notifications);
                self.unseen_notifications = 0;
            }
            C::Esc => {
                if self.overlay != Overlay::None {
                    self.overlay = Overlay::None;
                } else {
                    self.input.take();
                }
            }
            // In a multi-line draft the arrows would be ambiguous: history only while
            // browsing it or on one line.
            C::Up if !self.input.text.contains('\n') || self.input.browsing.is_some() => {
                self.input.history_up()
            }
            C::Down if !self.input.text.contains('\n') || self.input.browsing.is_some() => {
                self.input.history_down()
            }
            C::Left => self.input.cursor = self.input.prev_boundary(),
            C::Right => self.input.cursor = self.input.next_boundary(),
            C::Home => self.input.cursor = 0,
            C::Char('a') if ctrl => self.input.cursor = 0,
            C::End => self.input.cursor = self.input.text.len(),
            C::Char('e') if ctrl => self.input.cursor = self.input.text.len(),
            C::Char('u') if ctrl => {
                self.input.take();
            }
            C::Char('k') if ctrl => self.input.text.truncate(self.input.cursor),
            C::Char('w') if ctrl => {
                let before = &self.input.text[..self.input.cursor];
                let trimmed = before.trim_end();
                let start = trimmed.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
                self.input.text.replace_range(start..self.input.cursor, "");
                self.input.cursor = start;
            }
            C::Backspace => {
                let at = self.input.prev_boundary();
                self.input.text.replace_range(at..self.input.cursor, "");
                self.input.cursor = at;
            }
            C::Delete => {
                let to = self.input.next_boundary();
                self.input.text.replace_range(self.input.cursor..to, "");
            }
            C::Char(c) if !ctrl => {
                let mut buf = [0u8; 4];
                if !self.input.insert(c.encode_utf8(&mut buf)) {
                    self.error(format!("the input holds at most {MAX_INPUT_BYTES} bytes"));
                    return Vec::new();
                }
                return self.typed(now_ms);
            }
            _ => {}
        }
        Vec::new()
    }

    /// A Typing frame for the current room, at most every [`TYPING_EVERY_MS`], and not for
    /// commands.
    fn typed(&mut self, now_ms: i64) -> Vec<Action> {
        if self.input.text.starts_with('/') && !self.input.text.starts_with("//") {
            return Vec::new();
        }
        let Some(room) = self.room().map(|r| r.room.id.clone()) else { return Vec::new() };
        let last = self.last_typing.get(&room).copied().unwrap_or(i64::MIN / 2);
        if now_ms - last < TYPING_EVERY_MS {
            return Vec::new();
        }
        if self.last_typing.len() >= MAX_PRESENCE {
            self.last_typing.clear();
        }
        self.last_typing.insert(room.clone(), now_ms);
        vec![Action::Typing(room)]
    }

    fn retry(&mut self) -> Vec<Action> {
        let Some(v) = self.rooms.get_mut(self.current) else { return Vec::new() };
        let room = v.room.id.clone();
        let mut actions = Vec::new();
        for p in v.pending.iter_mut().filter(|p| p.failed.is_some()) {
            p.failed = None;
            actions.push(Action::Send {
                room: room.clone(),
                cmid: p.cmid.clone(),
                text: p.text.clone(),
            });
        }
        if actions.is_empty() {
            self.say("nothing to retry");
        }
        actions
    }

    fn submit(&mut self) -> Vec<Action> {
        let line = self.input.text.trim_end().to_string();
        if line.trim().is_empty() {
            self.input.take();
            return Vec::new();
        }
        let room = self.room().map(|r| r.room.id.clone());
        match commands::parse(&line) {
            Some(Err(e)) => {
                // Kept in the input to fix.
                self.error(e.to_string());
                Vec::new()
            }
            Some(Ok(cmd)) => {
                self.input.remember(&line);
                self.input.take();
                match cmd {
                    Command::Help => {
                        self.overlay = toggle(self.overlay, Overlay::Help);
                        Vec::new()
                    }
                    Command::Quit => vec![Action::Quit],
                    Command::Retry => self.retry(),
                    Command::Away => {
                        self.away = !self.away;
                        vec![Action::SetAway(self.away)]
                    }
                    Command::Join(_)
                    | Command::Create { .. }
                    | Command::Dm(_)
                    | Command::Search(_) => {
                        vec![Action::Run(cmd, room)]
                    }
                    other if room.is_none() => {
                        self.error(format!("{other:?} needs a room: /join one first"));
                        Vec::new()
                    }
                    other => vec![Action::Run(other, room)],
                }
            }
            None => {
                let Some(v) = self.rooms.get_mut(self.current) else {
                    self.error("you are in no room yet: /join ROOM or /create NAME");
                    return Vec::new();
                };
                if v.pending.len() >= MAX_PENDING_PER_ROOM {
                    self.error(format!(
                        "{MAX_PENDING_PER_ROOM} messages are still unsent here; wait for the \
                         connection"
                    ));
                    return Vec::new();
                }
                self.input.remember(&line);
                self.input.take();
                let text = commands::message_text(&line).to_string();
                let cmid = crate::store::new_id('m');
                v.pending.push(Pending {
                    cmid: cmid.clone(),
                    text: text.clone(),
                    failed: None,
                    acked: None,
                });
                self.scroll = 0;
                vec![Action::Send { room: v.room.id.clone(), cmid, text }]
            }
        }
    }

    /// The latest message of ours in the current room, for `/edit` and `/delete` without a seq.
    pub fn my_latest(&self) -> Option<u64> {
        let v = self.room()?;
        v.events.values().rev().find_map(|e| match &e.kind {
            Some(Kind::Message(m)) if m.sender_id == self.me && !m.deleted => Some(e.seq),
            _ => None,
        })
    }

    /// Who is typing in the current room, by name.
    pub fn typing_names(&self) -> Vec<String> {
        let Some(v) = self.room() else { return Vec::new() };
        let mut names: Vec<String> = v.typing.keys().map(|u| self.names.name(u)).collect();
        names.sort();
        names
    }

    /// Total unread messages outside the current room (for the status line).
    pub fn unread_elsewhere(&self) -> u64 {
        self.rooms
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.current)
            .map(|(_, v)| v.room.unread_count)
            .sum()
    }
}

fn toggle(now: Overlay, to: Overlay) -> Overlay {
    if now == to { Overlay::None } else { to }
}

/// Counts a live reaction change into a shown message (`mine`: the reaction is the user's).
fn count_reaction(m: &mut proto::Message, emoji: &str, added: bool, mine: bool) {
    match m.reactions.iter().position(|r| r.emoji == emoji) {
        Some(i) if added => {
            m.reactions[i].count += 1;
            m.reactions[i].mine |= mine;
        }
        Some(i) => {
            let r = &mut m.reactions[i];
            r.count = r.count.saturating_sub(1);
            if mine {
                r.mine = false;
            }
            if r.count == 0 {
                m.reactions.remove(i);
            }
        }
        None if added => {
            m.reactions.push(proto::Reaction { emoji: emoji.to_string(), count: 1, mine })
        }
        None => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crossterm::event::KeyEventState;

    pub(crate) fn room(id: &str, name: &str, last_seq: u64, unread: u64) -> proto::Room {
        proto::Room {
            id: id.into(),
            name: name.into(),
            visibility: proto::Visibility::Public as i32,
            my_role: proto::RoomRole::Member as i32,
            last_seq,
            unread_count: unread,
            first_seq: 1,
            member_count: 2,
            ..Default::default()
        }
    }

    pub(crate) fn message(room: &str, seq: u64, sender: &str, text: &str) -> proto::RoomEvent {
        proto::RoomEvent {
            room_id: room.into(),
            seq,
            at_ms: 1_700_000_000_000 + seq as i64 * 60_000,
            actor_id: sender.into(),
            kind: Some(Kind::Message(proto::Message {
                room_id: room.into(),
                seq,
                sender_id: sender.into(),
                text: text.into(),
                client_message_id: format!("c{seq}"),
                ..Default::default()
            })),
        }
    }

    pub(crate) fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn with(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent {
            code,
            modifiers: m,
            kind: crossterm::event::KeyEventKind::Press,
            state: KeyEventState::NONE,
        }
    }

    pub(crate) fn type_text(s: &mut State, text: &str) -> Vec<Action> {
        let mut all = Vec::new();
        for c in text.chars() {
            all.extend(s.key(key(KeyCode::Char(c)), 0));
        }
        all
    }

    pub(crate) fn two_rooms() -> State {
        let mut s = State::new("ume", "alice", "https://localhost:7443", "HTTP/2", None);
        let actions = s.set_rooms(vec![room("r2", "random", 0, 0), room("r1", "general", 5, 2)]);
        assert_eq!(s.rooms[0].room.name, "general", "sorted by name");
        assert!(actions.contains(&Action::Subscribe("r1".into(), 5)));
        assert!(actions.contains(&Action::Subscribe("r2".into(), 0)));
        assert!(actions.contains(&Action::LoadOlder { room: "r1".into(), before: 6 }));
        assert!(actions.contains(&Action::MarkRead("r1".into(), 5)));
        s
    }

    #[test]
    fn search_needs_no_room_and_goes_to_the_server() {
        let mut s = State::new("ume", "alice", "https://localhost:7443", "HTTP/2", None);
        type_text(&mut s, "/search deploy friday");
        let a = s.key(key(KeyCode::Enter), 0);
        assert_eq!(a, vec![Action::Run(Command::Search("deploy friday".into()), None)]);
        assert!(s.input.text.is_empty());
    }

    #[test]
    fn a_typed_message_is_pending_until_its_event_arrives() {
        let mut s = two_rooms();
        type_text(&mut s, "hi all");
        let a = s.key(key(KeyCode::Enter), 0);
        let [Action::Send { room, cmid, text }] = a.as_slice() else { panic!("{a:?}") };
        assert_eq!((room.as_str(), text.as_str()), ("r1", "hi all"));
        assert_eq!(s.input.text, "");
        assert_eq!(s.rooms[0].pending.len(), 1);
        // The ack first: still shown as pending until the event is here.
        s.on_ack(&proto::SendAck { client_message_id: cmid.clone(), room_id: "r1".into(), seq: 6 });
        assert_eq!(s.rooms[0].pending[0].acked, Some(6));
        let mut e = message("r1", 6, "ume", "hi all");
        if let Some(Kind::Message(m)) = &mut e.kind {
            m.client_message_id = cmid.clone();
        }
        s.on_event(e.clone());
        assert!(s.rooms[0].pending.is_empty());
        // Replayed again after a reconnect: held once.
        s.on_event(e);
        assert_eq!(s.rooms[0].events.len(), 1);
    }

    #[test]
    fn a_refused_send_is_marked_and_retried_with_the_same_id() {
        let mut s = two_rooms();
        type_text(&mut s, "too fast");
        let a = s.key(key(KeyCode::Enter), 0);
        let Action::Send { cmid, .. } = &a[0] else { panic!() };
        s.on_stream_error(&proto::StreamError {
            code: "RESOURCE_EXHAUSTED".into(),
            message: "slow down".into(),
            client_message_id: cmid.clone(),
            room_id: "r1".into(),
        });
        assert_eq!(s.rooms[0].pending[0].failed.as_deref(), Some("RESOURCE_EXHAUSTED: slow down"));
        let again = s.key(with(KeyCode::Char('r'), KeyModifiers::CONTROL), 0);
        assert_eq!(
            again,
            [Action::Send { room: "r1".into(), cmid: cmid.clone(), text: "too fast".into() }]
        );
        assert_eq!(s.rooms[0].pending[0].failed, None);
    }

    #[test]
    fn unread_and_mentions_count_outside_the_current_room_only() {
        let mut s = two_rooms();
        assert_eq!(s.rooms[0].room.unread_count, 0, "opening marks read");
        s.on_event(message("r2", 1, "ubob", "hey"));
        let mut m = message("r2", 2, "ubob", "@alice look");
        if let Some(Kind::Message(x)) = &mut m.kind {
            x.mention_user_ids = vec!["ume".into()];
        }
        s.on_event(m);
        assert_eq!((s.rooms[1].room.unread_count, s.rooms[1].room.mention_count), (2, 1));
        // Replays of what the list already counted do not count again.
        s.on_event(message("r1", 4, "ubob", "old"));
        assert_eq!(s.rooms[0].room.unread_count, 0);
        // In the current room, a new message is read at once.
        let a = s.on_event(message("r1", 6, "ubob", "new"));
        assert!(a.contains(&Action::MarkRead("r1".into(), 6)), "{a:?}");
        assert_eq!(s.unread_elsewhere(), 2);
        let a = s.key(key(KeyCode::Tab), 0);
        assert!(a.contains(&Action::MarkRead("r2".into(), 2)), "{a:?}");
        assert_eq!(s.rooms[1].room.unread_count, 0);
        s.on_read_marker(&proto::ReadMarker {
            room_id: "r1".into(),
            seq: 3,
            unread_count: 3,
            mention_count: 0,
        });
        assert_eq!(s.rooms[0].room.unread_count, 3);
    }

    #[test]
    fn edits_and_deletes_change_the_message_they_name() {
        let mut s = two_rooms();
        s.on_event(message("r1", 6, "ubob", "teh"));
        s.on_event(proto::RoomEvent {
            room_id: "r1".into(),
            seq: 7,
            at_ms: 5,
            actor_id: "ubob".into(),
            kind: Some(Kind::Edited(proto::MessageEdited { target_seq: 6, text: "the".into() })),
        });
        let Some(Kind::Message(m)) = &s.rooms[0].events[&6].kind else { panic!() };
        assert_eq!((m.text.as_str(), m.edited_at_ms), ("the", 5));
        s.on_event(proto::RoomEvent {
            room_id: "r1".into(),
            seq: 8,
            kind: Some(Kind::Deleted(proto::MessageDeleted { target_seq: 6 })),
            ..Default::default()
        });
        let Some(Kind::Message(m)) = &s.rooms[0].events[&6].kind else { panic!() };
        assert!(m.deleted && m.text.is_empty());
        // An edit of a message we do not hold is harmless.
        s.on_event(proto::RoomEvent {
            room_id: "r1".into(),
            seq: 9,
            kind: Some(Kind::Edited(proto::MessageEdited { target_seq: 1, text: "x".into() })),
            ..Default::default()
        });
    }

    #[test]
    fn input_has_history_multiple_lines_and_a_size_limit() {
        let mut s = two_rooms();
        type_text(&mut s, "first");
        s.key(key(KeyCode::Enter), 0);
        type_text(&mut s, "two");
        s.key(with(KeyCode::Enter, KeyModifiers::ALT), 0);
        type_text(&mut s, "lines");
        assert_eq!(s.input.text, "two\nlines");
        let a = s.key(key(KeyCode::Enter), 0);
        assert!(matches!(&a[0], Action::Send { text, .. } if text == "two\nlines"));
        type_text(&mut s, "draft");
        s.key(key(KeyCode::Up), 0);
        assert_eq!(s.input.text, "two\nlines");
        s.key(key(KeyCode::Up), 0);
        assert_eq!(s.input.text, "first");
        s.key(key(KeyCode::Down), 0);
        s.key(key(KeyCode::Down), 0);
        assert_eq!(s.input.text, "draft");
        s.key(key(KeyCode::Left), 0);
        s.key(key(KeyCode::Backspace), 0);
        assert_eq!(s.input.text, "drat");
        s.key(with(KeyCode::Char('w'), KeyModifiers::CONTROL), 0);
        assert_eq!(s.input.text, "t");
        s.input.take();
        s.paste(&"é".repeat(MAX_INPUT_BYTES));
        assert!(s.flash.as_ref().unwrap().1, "refused");
        assert_eq!(s.input.text, "");
        // Multi-byte characters edit by character.
        type_text(&mut s, "añb");
        s.key(key(KeyCode::Left), 0);
        s.key(key(KeyCode::Backspace), 0);
        assert_eq!(s.input.text, "ab");
    }

    #[test]
    fn commands_become_actions_and_bad_ones_stay_to_fix() {
        let mut s = two_rooms();
        type_text(&mut s, "/topic Ship it");
        let a = s.key(key(KeyCode::Enter), 0);
        assert_eq!(a, [Action::Run(Command::Topic("Ship it".into()), Some("r1".into()))]);
        type_text(&mut s, "/role bob king");
        assert!(s.key(key(KeyCode::Enter), 0).is_empty());
        assert!(s.flash.as_ref().unwrap().0.contains("no role `king`"));
        assert_eq!(s.input.text, "/role bob king", "kept to fix");
        s.key(key(KeyCode::Esc), 0);
        type_text(&mut s, "/away");
        assert_eq!(s.key(key(KeyCode::Enter), 0), [Action::SetAway(true)]);
        type_text(&mut s, "/help");
        s.key(key(KeyCode::Enter), 0);
        assert_eq!(s.overlay, Overlay::Help);
        type_text(&mut s, "//not a command");
        let a = s.key(key(KeyCode::Enter), 0);
        assert!(matches!(&a[0], Action::Send { text, .. } if text == "/not a command"));
        type_text(&mut s, "/quit");
        assert_eq!(s.key(key(KeyCode::Enter), 0), [Action::Quit]);
    }

    #[test]
    fn typing_is_sent_at_most_every_few_seconds_and_shown_for_a_while() {
        let mut s = two_rooms();
        assert_eq!(s.key(key(KeyCode::Char('h')), 1_000), [Action::Typing("r1".into())]);
        assert!(s.key(key(KeyCode::Char('i')), 2_000).is_empty());
        assert_eq!(s.key(key(KeyCode::Char('!')), 4_500), [Action::Typing("r1".into())]);
        s.input.take();
        assert!(type_text(&mut s, "/join x").is_empty(), "commands are not typing");
        s.on_typing("r1", "ubob", 10_000);
        s.on_typing("r1", "ume", 10_000);
        s.names.learn(&proto::User {
            id: "ubob".into(),
            username: "bob".into(),
            ..Default::default()
        });
        assert_eq!(s.typing_names(), ["bob"]);
        s.tick(10_000 + TYPING_SHOWN_MS);
        assert!(s.typing_names().is_empty());
        s.on_typing("r1", "ubob", 20_000);
        s.on_event(message("r1", 6, "ubob", "done typing"));
        assert!(s.typing_names().is_empty(), "their message ends it");
    }

    #[test]
    fn scrolling_back_loads_older_history_once_at_a_time() {
        let mut s = two_rooms();
        s.on_history("r1", (3..=5).map(|i| message("r1", i, "ubob", "x")).collect(), true);
        s.max_scroll.set(4);
        s.page.set(10);
        let a = s.key(key(KeyCode::PageUp), 0);
        assert_eq!(a, [Action::LoadOlder { room: "r1".into(), before: 3 }]);
        assert_eq!(s.scroll, 4);
        assert!(s.key(key(KeyCode::PageUp), 0).is_empty(), "one page at a time");
        s.on_history("r1", (1..=2).map(|i| message("r1", i, "ubob", "x")).collect(), false);
        assert!(!s.rooms[0].can_load_older());
        s.mouse(MouseEvent {
            kind: MouseEventKind::ScrollDown,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        assert_eq!(s.scroll, 1);
    }

    #[test]
    fn leaving_removed_rooms_and_switching() {
        let mut s = two_rooms();
        let a = s.key(with(KeyCode::Char('2'), KeyModifiers::ALT), 0);
        assert!(a.contains(&Action::LoadMembers("r2".into())), "{a:?}");
        assert_eq!(s.current, 1);
        let a = s.on_event(proto::RoomEvent {
            room_id: "r2".into(),
            seq: 1,
            kind: Some(Kind::Member(proto::MemberChanged {
                user_id: "ume".into(),
                removed: true,
                banned: true,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(a, [Action::RefreshRooms]);
        assert!(s.flash.as_ref().unwrap().0.contains("you were banned from #random"));
        let a = s.set_rooms(vec![room("r1", "general", 5, 0)]);
        assert!(a.contains(&Action::Unsubscribe("r2".into())));
        assert_eq!(s.current, 0);
        // A room made by /create becomes current once listed.
        let a = s.want_room("r3");
        assert_eq!(a, [Action::RefreshRooms]);
        s.set_rooms(vec![room("r1", "general", 5, 0), room("r3", "new", 0, 0)]);
        assert_eq!(s.room().unwrap().room.id, "r3");
    }

    #[test]
    fn notifications_are_bounded_and_invites_refresh_the_list() {
        let mut s = two_rooms();
        for i in 0..(MAX_NOTIFICATIONS as u64 + 5) {
            s.on_notification(proto::Notification {
                id: i,
                kind: proto::NotificationKind::Mention as i32,
                room_id: "r1".into(),
                text: "@alice \x1b[31mhey".into(),
                ..Default::default()
            });
        }
        assert_eq!(s.notifications.len(), MAX_NOTIFICATIONS);
        assert!(
            s.flash.as_ref().unwrap().0.contains("mentioned you in #general: @alice ^[[31mhey")
        );
        let a = s.on_notification(proto::Notification {
            kind: proto::NotificationKind::Invite as i32,
            ..Default::default()
        });
        assert_eq!(a, [Action::RefreshRooms]);
    }

    #[test]
    fn the_connection_state_follows_the_session() {
        let mut s = two_rooms();
        assert_eq!(s.on_connected(), [Action::RefreshRooms]);
        s.on_disconnected("UNAVAILABLE: gone", 5_000);
        assert!(matches!(s.conn, Conn::Reconnecting { at_ms: 5_000, .. }));
        s.on_connected();
        assert_eq!(s.conn, Conn::Connected);
        assert_eq!(s.flash.as_ref().unwrap().0, "reconnected");
    }
}
