//! `edgechat chat`: the interactive client. [`state`] holds what is shown and decides what
//! keys and frames do; [`ui`] draws it; [`commands`] parses slash commands; this module is
//! the thin runner between them, the terminal (crossterm) and the server (a
//! [`ChatSession`] for the stream, unary calls in tracked tasks).

pub mod commands;
pub mod state;
pub mod ui;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::{Opened, ProfileArg, names};
use crate::client::ClientError;
use crate::client::session::{ChatSession, Client, SessionEvent};
use crate::clock::now_ms;
use crate::proto::{self, client_frame, server_frame};
use commands::Command;
use state::{Action, State};

/// `edgechat chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// Room to open first (name or id); a public room you are not in is joined.
    pub room: Option<String>,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// Calls to the server in flight at once (history pages, member lists, commands). A command
/// typed beyond it is refused with a message; a background load is simply tried again later.
const MAX_TASKS: usize = 16;
/// User ids being looked up at once; more wait for the next event that names them.
const MAX_LOOKUPS: usize = 100;

/// What a finished call brings back.
enum Outcome {
    Rooms(Result<Vec<proto::Room>, ClientError>),
    History {
        room: String,
        result: Result<proto::HistoryResponse, ClientError>,
    },
    Members {
        room: String,
        result: Result<Vec<proto::Member>, ClientError>,
    },
    Names(Result<Vec<proto::User>, ClientError>),
    /// A `/search`: its words and the first page.
    Search {
        query: String,
        result: Result<proto::SearchResponse, ClientError>,
    },
    /// A slash command: a message, and a room to switch to.
    Done(Result<(String, Option<String>), String>),
}

/// Restores the terminal however `chat` ends (error, panic, Ctrl+C).
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        use crossterm::{event, execute, terminal};
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            event::EnableMouseCapture,
            event::EnableBracketedPaste
        )?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            Screen::restore();
            previous(info);
        }));
        Ok(screen)
    }

    fn restore() {
        use crossterm::{cursor, event, execute, terminal};
        let _ = execute!(
            std::io::stdout(),
            event::DisableBracketedPaste,
            event::DisableMouseCapture,
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
        let _ = terminal::disable_raw_mode();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        Screen::restore();
    }
}

/// `edgechat chat`.
pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let o = super::open(&args.profile)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("edgechat chat needs a terminal; in scripts use `edgechat send` and `edgechat tail`");
    }
    // A session that is gone is said before the screen takes over; a server that is down is
    // shown on the screen, which keeps trying.
    if let Err(e) = o.client.access_token().await
        && e.code() == tonic::Code::Unauthenticated
    {
        return Err(o.expired());
    }
    let me = o.client.user_id().unwrap_or_else(|| o.profile.user_id.clone());
    let state =
        State::new(&me, &o.profile.username, &o.profile.server, o.profile.transport_name(), None);
    let screen = Screen::enter()?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut terminal = ratatui::Terminal::new(backend)?;
    let mut runner = Runner {
        session: ChatSession::start(o.client.clone()),
        o,
        state,
        tasks: JoinSet::new(),
        refreshing: false,
        refresh_again: false,
        looking_up: Vec::new(),
        wanted: args.room,
    };
    let result = runner.run(&mut terminal).await;
    drop(terminal);
    drop(screen);
    result
}

struct Runner {
    o: Opened,
    session: ChatSession,
    state: State,
    tasks: JoinSet<Outcome>,
    refreshing: bool,
    refresh_again: bool,
    looking_up: Vec<String>,
    /// The room named on the command line, until the first room list resolves it.
    wanted: Option<String>,
}

impl Runner {
    async fn run<B: ratatui::backend::Backend>(
        &mut self,
        terminal: &mut ratatui::Terminal<B>,
    ) -> anyhow::Result<()>
    where
        B::Error: Send + Sync + 'static,
    {
        let mut keys = EventStream::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        self.act(vec![Action::RefreshRooms]);
        loop {
            let now = now_ms();
            terminal.draw(|f| ui::render(f, &self.state, now))?;
            let actions = tokio::select! {
                ev = keys.next() => match ev {
                    Some(Ok(Event::Key(k))) => self.state.key(k, now_ms()),
                    Some(Ok(Event::Mouse(m))) => self.state.mouse(m),
                    Some(Ok(Event::Paste(text))) => {
                        self.state.paste(&text);
                        Vec::new()
                    }
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(e)) => bail!("reading the terminal: {e}"),
                    None => return Ok(()),
                },
                ev = self.session.next() => match ev {
                    Some(ev) => self.on_session(ev)?,
                    None => bail!("the chat session stopped"),
                },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => match done {
                    Ok(outcome) => self.on_outcome(outcome)?,
                    Err(e) => {
                        self.state.error(format!("internal error: {e}"));
                        Vec::new()
                    }
                },
                _ = tick.tick() => {
                    self.state.tick(now_ms());
                    Vec::new()
                }
            };
            if actions.contains(&Action::Quit) {
                return Ok(());
            }
            self.act(actions);
        }
    }

    fn on_session(&mut self, ev: SessionEvent) -> anyhow::Result<Vec<Action>> {
        Ok(match ev {
            SessionEvent::Connected => self.state.on_connected(),
            SessionEvent::Disconnected { error, retry_in } => {
                if error.starts_with("UNAUTHENTICATED") {
                    return Err(self.o.expired());
                }
                self.state.on_disconnected(&error, now_ms() + retry_in.as_millis() as i64);
                Vec::new()
            }
            SessionEvent::Frame(kind) => match kind {
                server_frame::Kind::Event(e) => {
                    let ids: Vec<String> = super::events::user_ids(&e)
                        .into_iter()
                        .filter(|i| !self.state.names.knows(i))
                        .map(String::from)
                        .collect();
                    self.look_up(ids);
                    self.state.on_event(e)
                }
                server_frame::Kind::SendAck(a) => {
                    self.state.on_ack(&a);
                    Vec::new()
                }
                server_frame::Kind::Presence(p) => {
                    self.state.on_presence(&p);
                    Vec::new()
                }
                server_frame::Kind::Typing(t) => {
                    self.state.on_typing(&t.room_id, &t.user_id, now_ms());
                    Vec::new()
                }
                server_frame::Kind::Notification(n) => {
                    self.look_up(vec![n.from_user_id.clone()]);
                    self.state.on_notification(n)
                }
                server_frame::Kind::Error(e) => self.state.on_stream_error(&e),
                server_frame::Kind::ReadMarker(m) => {
                    self.state.on_read_marker(&m);
                    Vec::new()
                }
                // The session reconnects by itself when the stream ends.
                _ => Vec::new(),
            },
        })
    }

    fn on_outcome(&mut self, outcome: Outcome) -> anyhow::Result<Vec<Action>> {
        let mut actions = Vec::new();
        match outcome {
            Outcome::Rooms(Ok(list)) => {
                self.refreshing = false;
                if std::mem::take(&mut self.refresh_again) {
                    actions.push(Action::RefreshRooms);
                }
                actions.extend(self.state.set_rooms(list.clone()));
                if let Some(want) = self.wanted.take() {
                    match names::resolve_room(&list, &want) {
                        Ok(r) if r.my_role != 0 => actions.extend(self.state.want_room(&r.id)),
                        Ok(r) => actions.push(Action::Run(Command::Join(r.id.clone()), None)),
                        Err(e) => self.state.error(e.to_string()),
                    }
                }
            }
            Outcome::Rooms(Err(e)) => {
                self.refreshing = false;
                self.fail(e)?;
            }
            Outcome::History { room, result: Ok(page) } => {
                let ids: Vec<String> = page
                    .events
                    .iter()
                    .flat_map(super::events::user_ids)
                    .filter(|i| !self.state.names.knows(i))
                    .map(String::from)
                    .collect();
                self.look_up(ids);
                self.state.on_history(&room, page.events, page.has_more);
            }
            Outcome::History { room, result: Err(e) } => {
                self.state.on_history_failed(&room);
                self.fail(e)?;
            }
            Outcome::Members { room, result: Ok(members) } => self.state.on_members(&room, members),
            Outcome::Members { result: Err(e), .. } => self.fail(e)?,
            Outcome::Names(result) => {
                self.looking_up.clear();
                match result {
                    Ok(users) => users.iter().for_each(|u| self.state.names.learn(u)),
                    Err(e) => self.fail(e)?,
                }
            }
            Outcome::Search { query, result: Ok(page) } => {
                let ids: Vec<String> = page
                    .hits
                    .iter()
                    .filter_map(|h| h.message.as_ref())
                    .map(|m| m.sender_id.clone())
                    .collect();
                self.look_up(ids);
                self.state.on_search(query, page);
            }
            Outcome::Search { result: Err(e), .. } => self.fail(e)?,
            Outcome::Done(Ok((said, open))) => {
                if !said.is_empty() {
                    self.state.say(said);
                }
                if let Some(id) = open {
                    actions.extend(self.state.want_room(&id));
                }
                actions.push(Action::RefreshRooms);
            }
            Outcome::Done(Err(e)) => self.state.error(e),
        }
        Ok(actions)
    }

    /// A failed background call: a lost session ends `chat`; anything else is shown (a down
    /// server is already on the status line, and the next connect refreshes everything).
    fn fail(&mut self, e: ClientError) -> anyhow::Result<()> {
        match e.code() {
            tonic::Code::Unauthenticated => Err(self.o.expired()),
            tonic::Code::Unavailable => Ok(()),
            _ => {
                self.state.error(e.to_string());
                Ok(())
            }
        }
    }

    fn spawn(&mut self, fut: impl std::future::Future<Output = Outcome> + Send + 'static) -> bool {
        if self.tasks.len() >= MAX_TASKS {
            return false;
        }
        self.tasks.spawn(fut);
        true
    }

    fn look_up(&mut self, mut ids: Vec<String>) {
        ids.retain(|i| !i.is_empty() && !self.looking_up.contains(i));
        ids.sort();
        ids.dedup();
        ids.truncate(MAX_LOOKUPS.saturating_sub(self.looking_up.len()));
        if ids.is_empty() || !self.looking_up.is_empty() {
            // One lookup at a time; the ids come up again with the next event that names
            // them.
            return;
        }
        let client = self.o.client.clone();
        let batch = ids.clone();
        if self.spawn(async move {
            Outcome::Names(
                async {
                    let mut auth = client.auth().await?;
                    let req = proto::LookupUsersRequest { usernames: Vec::new(), user_ids: batch };
                    Ok(auth.lookup_users(req).await?.into_inner().users)
                }
                .await,
            )
        }) {
            self.looking_up = ids;
        }
    }

    fn act(&mut self, actions: Vec<Action>) {
        for a in actions {
            self.perform(a);
        }
    }

    fn perform(&mut self, a: Action) {
        let client = self.o.client.clone();
        match a {
            Action::Send { room, cmid, text } => self.session.send_with_id(&room, &cmid, &text),
            Action::Typing(room) => {
                self.session.frame(client_frame::Kind::Typing(proto::Typing { room_id: room }))
            }
            Action::MarkRead(room, seq) => self
                .session
                .frame(client_frame::Kind::MarkRead(proto::MarkRead { room_id: room, seq })),
            Action::SetAway(away) => {
                let status =
                    if away { proto::PresenceStatus::Away } else { proto::PresenceStatus::Online };
                self.session.frame(client_frame::Kind::SetPresence(proto::SetPresence {
                    status: status as i32,
                }));
                self.state.say(if away { "you are away" } else { "you are back online" });
            }
            Action::Subscribe(room, after) => self.session.subscribe(&room, Some(after)),
            Action::Unsubscribe(room) => self.session.unsubscribe(&room),
            Action::RefreshRooms => {
                if self.refreshing {
                    self.refresh_again = true;
                    return;
                }
                let started = self.spawn(async move {
                    Outcome::Rooms(
                        async {
                            let mut rooms = client.rooms().await?;
                            let list = rooms.list_rooms(proto::ListRoomsRequest {}).await?;
                            Ok(list.into_inner().rooms)
                        }
                        .await,
                    )
                });
                self.refreshing = started;
            }
            Action::LoadOlder { room, before } => {
                let id = room.clone();
                let this_room = room.clone();
                let started = self.spawn(async move {
                    let result = async {
                        let mut chat = client.chat().await?;
                        let req = proto::HistoryRequest {
                            room_id: id,
                            before_seq: before,
                            after_seq: 0,
                            limit: state::HISTORY_PAGE,
                            ..Default::default()
                        };
                        Ok(chat.history(req).await?.into_inner())
                    }
                    .await;
                    Outcome::History { room: this_room, result }
                });
                if !started {
                    self.state.on_history_failed(&room);
                }
            }
            Action::LoadMembers(room) => {
                let id = room.clone();
                self.spawn(async move {
                    let result = async {
                        let mut rooms = client.rooms().await?;
                        let req = proto::ListMembersRequest { room_id: id };
                        Ok(rooms.list_members(req).await?.into_inner().members)
                    }
                    .await;
                    Outcome::Members { room, result }
                });
            }
            Action::Run(Command::Search(query), _) => {
                let req = proto::SearchRequest { query: query.clone(), ..Default::default() };
                let busy = !self.spawn(async move {
                    let result = async {
                        let mut chat = client.chat().await?;
                        Ok(chat.search(req).await?.into_inner())
                    }
                    .await;
                    Outcome::Search { query, result }
                });
                if busy {
                    self.state.error("busy: too many requests in flight; try again in a moment");
                }
            }
            Action::Run(cmd, room) => {
                let ctx = Context {
                    client,
                    room,
                    rooms: self.state.known_rooms.clone(),
                    names: self.state.names.clone(),
                    latest: self.state.my_latest(),
                };
                if !self.spawn(async move { Outcome::Done(run_command(cmd, ctx).await) }) {
                    self.state.error("busy: too many requests in flight; try again in a moment");
                }
            }
            Action::Quit => {}
        }
    }
}

/// What a command needs from the state, copied so it can run in a task.
struct Context {
    client: Client,
    room: Option<String>,
    rooms: Vec<proto::Room>,
    names: names::Names,
    latest: Option<u64>,
}

impl Context {
    fn room(&self) -> Result<String, String> {
        self.room.clone().ok_or_else(|| "this needs a room: /join one first".to_string())
    }

    fn room_label(&self, id: &str) -> String {
        self.rooms
            .iter()
            .find(|r| r.id == id)
            .map(|r| format!("#{}", super::text::clean(&r.name)))
            .unwrap_or_else(|| "the room".into())
    }

    async fn user_id(&self, name: &str) -> Result<String, String> {
        if let Some(id) = self.names.id_of(name) {
            return Ok(id.to_string());
        }
        let mut auth = self.client.auth().await.map_err(|e| e.to_string())?;
        let req = proto::LookupUsersRequest { usernames: vec![name.into()], user_ids: Vec::new() };
        let found = auth.lookup_users(req).await.map_err(|e| ClientError::from(e).to_string())?;
        found
            .into_inner()
            .users
            .into_iter()
            .next()
            .map(|u| u.id)
            .ok_or_else(|| format!("no user `{}`", super::text::clean(name)))
    }
}

/// Runs a slash command against the server: what to say, and a room to switch to.
async fn run_command(cmd: Command, ctx: Context) -> Result<(String, Option<String>), String> {
    let e = |e: tonic::Status| ClientError::from(e).to_string();
    let c = |e: ClientError| e.to_string();
    let clean = super::text::clean;
    match cmd {
        Command::Join(name) => {
            let room = names::resolve_room(&ctx.rooms, &name).map_err(|x| x.to_string())?.clone();
            if room.my_role != 0 {
                return Ok((String::new(), Some(room.id)));
            }
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            rooms
                .join_room(proto::JoinRoomRequest { room_id: room.id.clone() })
                .await
                .map_err(e)?;
            Ok((format!("joined #{}", clean(&room.name)), Some(room.id)))
        }
        Command::Create { name, private, read_only } => {
            let visibility =
                if private { proto::Visibility::Private } else { proto::Visibility::Public };
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            let req = proto::CreateRoomRequest {
                name,
                topic: String::new(),
                visibility: visibility as i32,
                read_only,
            };
            let room = rooms.create_room(req).await.map_err(e)?.into_inner();
            Ok((format!("created #{}", clean(&room.name)), Some(room.id)))
        }
        Command::Dm(user) => {
            let user_id = ctx.user_id(&user).await?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            let room = rooms
                .open_direct(proto::OpenDirectRequest { user_id })
                .await
                .map_err(e)?
                .into_inner();
            Ok((String::new(), Some(room.id)))
        }
        Command::Leave => {
            let room_id = ctx.room()?;
            let label = ctx.room_label(&room_id);
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            rooms.leave_room(proto::LeaveRoomRequest { room_id }).await.map_err(e)?;
            Ok((format!("you left {label}"), None))
        }
        Command::Invite(user) => {
            let room_id = ctx.room()?;
            let user_id = ctx.user_id(&user).await?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            rooms
                .invite_member(proto::InviteMemberRequest { room_id, user_id })
                .await
                .map_err(e)?;
            Ok((format!("invited {}", clean(&user)), None))
        }
        Command::Kick(user, reason) => remove(&ctx, &user, reason, false).await,
        Command::Ban(user, reason) => remove(&ctx, &user, reason, true).await,
        Command::Unban(user) => {
            let room_id = ctx.room()?;
            let user_id = ctx.user_id(&user).await?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            rooms.unban_member(proto::UnbanMemberRequest { room_id, user_id }).await.map_err(e)?;
            Ok((format!("unbanned {}", clean(&user)), None))
        }
        Command::Role(user, role) => {
            let room_id = ctx.room()?;
            let user_id = ctx.user_id(&user).await?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            let req = proto::SetMemberRoleRequest { room_id, user_id, role: role as i32 };
            rooms.set_member_role(req).await.map_err(e)?;
            Ok((format!("{} is now {}", clean(&user), names::role_name(role as i32)), None))
        }
        Command::Topic(topic) => {
            let room_id = ctx.room()?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            let req = proto::UpdateRoomRequest { room_id, topic: Some(topic), read_only: None };
            rooms.update_room(req).await.map_err(e)?;
            Ok((String::new(), None))
        }
        Command::Edit(seq, text) => {
            let room_id = ctx.room()?;
            let seq = seq.or(ctx.latest).ok_or("no message of yours here to edit")?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            chat.edit_message(proto::EditMessageRequest { room_id, seq, text }).await.map_err(e)?;
            Ok((String::new(), None))
        }
        Command::Delete(seq) => {
            let room_id = ctx.room()?;
            let seq = seq.or(ctx.latest).ok_or("no message of yours here to delete")?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            chat.delete_message(proto::DeleteMessageRequest { room_id, seq }).await.map_err(e)?;
            Ok((String::new(), None))
        }
        Command::Reply(seq, text) => {
            let room_id = ctx.room()?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            let client_message_id = crate::store::new_id('m');
            let req = proto::SendMessageRequest {
                room_id,
                client_message_id,
                text,
                reply_to_seq: seq,
                ..Default::default()
            };
            chat.send_message(req).await.map_err(e)?;
            Ok((String::new(), None))
        }
        Command::React(seq, emoji, on) => {
            let room_id = ctx.room()?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            if on {
                let req = proto::AddReactionRequest { room_id, seq, emoji };
                chat.add_reaction(req).await.map_err(e)?;
            } else {
                let req = proto::RemoveReactionRequest { room_id, seq, emoji };
                chat.remove_reaction(req).await.map_err(e)?;
            }
            Ok((String::new(), None))
        }
        Command::Pin(seq, on) => {
            let room_id = ctx.room()?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            if on {
                chat.pin_message(proto::PinMessageRequest { room_id, seq }).await.map_err(e)?;
            } else {
                chat.unpin_message(proto::UnpinMessageRequest { room_id, seq }).await.map_err(e)?;
            }
            Ok((String::new(), None))
        }
        Command::Attach(path, caption) => {
            let room_id = ctx.room()?;
            let bytes = tokio::fs::read(&path).await.map_err(|e| format!("{path}: {e}"))?;
            let name = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{path} names no file"))?;
            let mut files = ctx.client.attachments().await.map_err(c)?;
            let a = crate::client::upload(&mut files, &name, &bytes).await.map_err(e)?;
            let mut chat = ctx.client.chat().await.map_err(c)?;
            let req = proto::SendMessageRequest {
                room_id,
                client_message_id: crate::store::new_id('m'),
                text: caption,
                attachment_ids: vec![a.id],
                ..Default::default()
            };
            chat.send_message(req).await.map_err(e)?;
            Ok((String::new(), None))
        }
        Command::Save(id, path) => {
            let mut files = ctx.client.attachments().await.map_err(c)?;
            let ask = proto::GetAttachmentRequest { attachment_id: id.clone() };
            let a = files.get_attachment(ask).await.map_err(e)?.into_inner();
            let a = a.attachment.unwrap_or_default();
            let bytes = crate::client::download(&mut files, &id).await.map_err(e)?;
            // Its own name, never a path it names: a name is the sender's to choose.
            let path = path.unwrap_or_else(|| crate::term::text::clean(&a.name).replace('/', "_"));
            crate::files::create(std::path::Path::new(&path), &bytes, crate::files::Mode::Public)
                .map_err(|e| format!("{path}: {e}"))?;
            Ok((format!("saved {path} ({})", crate::term::events::human_size(a.size)), None))
        }
        Command::Mute(muted) => {
            let room_id = ctx.room()?;
            let mut rooms = ctx.client.rooms().await.map_err(c)?;
            rooms.mute_room(proto::MuteRoomRequest { room_id, muted }).await.map_err(e)?;
            Ok(((if muted { "muted" } else { "unmuted" }).to_string(), None))
        }
        // Handled by the state without the server.
        Command::Away | Command::Retry | Command::Help | Command::Quit => Ok((String::new(), None)),
        // Run by the loop itself: its results are not a status line.
        Command::Search(_) => Ok((String::new(), None)),
    }
}

async fn remove(
    ctx: &Context,
    user: &str,
    reason: String,
    ban: bool,
) -> Result<(String, Option<String>), String> {
    let room_id = ctx.room()?;
    let user_id = ctx.user_id(user).await?;
    let mut rooms = ctx.client.rooms().await.map_err(|e| e.to_string())?;
    let req = proto::RemoveMemberRequest { room_id, user_id, ban, reason };
    rooms.remove_member(req).await.map_err(|e| ClientError::from(e).to_string())?;
    let done = if ban { "banned" } else { "removed" };
    Ok((format!("{done} {}", super::text::clean(user)), None))
}
