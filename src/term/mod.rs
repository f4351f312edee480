//! The terminal client: `edgechat login`, `logout`, `profiles`, `send`, `tail`, `rooms`,
//! `history` and `chat`. Everything goes through the client library (`client::session`): a
//! [`profile`] holds the server and the refresh token, names are resolved in [`names`],
//! events are described in [`events`], and all server text passes [`text::clean`] before
//! it reaches the terminal.

pub mod chat;
pub mod events;
pub mod names;
pub mod profile;
pub mod text;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::client::ClientError;
use crate::client::session::{ChatSession, Client, SessionEvent};
use crate::proto::{self, server_frame};
use names::Names;
use profile::{Profile, Slot, Transport};

/// A line on stderr that never panics: a closed stderr (`2>&-`, a reader gone) must not end
/// a `tail` or a `send` that is still retrying.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `--profile NAME`, shared by every client command.
#[derive(Args, Debug, Clone, Default)]
pub struct ProfileArg {
    /// Profile to use [default: $EDGECHAT_PROFILE, else `default`].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// `edgechat login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The server: https://host:port, or h3://host:port for HTTP/3.
    #[arg(long, value_name = "URL", default_value = "https://localhost:7443")]
    pub server: String,
    /// Username.
    #[arg(long, value_name = "NAME")]
    pub user: String,
    /// Create the account first (when the server's registration is open).
    #[arg(long)]
    pub register: bool,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// CA of the server's certificate [default: ./data/certs/ca.pem if it exists].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Use HTTP/3 (QUIC, same host and port over UDP).
    #[arg(long)]
    pub h3: bool,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `edgechat logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Also end every other session of the user (all devices, all streams).
    #[arg(long)]
    pub all_devices: bool,
    /// Only forget the profile here, without telling the server (when it is unreachable
    /// for good; the refresh token stays valid until it expires).
    #[arg(long)]
    pub local: bool,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `edgechat send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Room name or id.
    pub room: String,
    /// The message [default: standard input, all of it, unless files are attached]; `-` also
    /// reads standard input.
    pub text: Vec<String>,
    /// Attach this file (repeatable, at most 10); uploaded first, resuming after a dropped
    /// connection.
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<std::path::PathBuf>,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `edgechat tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// Room name or id.
    pub room: String,
    /// Start after this seq (0: from the first retained event) [default: live from now].
    #[arg(long, value_name = "N")]
    pub after_seq: Option<u64>,
    /// One JSON object per line (room, seq, sender, text, kind, ...).
    #[arg(long)]
    pub json: bool,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `edgechat rooms`.
#[derive(Args, Debug)]
pub struct RoomsArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// `edgechat history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Room name or id.
    pub room: String,
    /// How many of the newest events.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Which profile to use.
    #[command(flatten)]
    pub profile: ProfileArg,
}

/// A profile opened for use: its slot, what it holds, and a client that keeps it current.
pub struct Opened {
    /// Where it lives.
    pub slot: Slot,
    /// What it holds.
    pub profile: Profile,
    /// Logged in (the first call refreshes the saved token).
    pub client: Client,
}

/// Opens the chosen profile.
pub fn open(arg: &ProfileArg) -> anyhow::Result<Opened> {
    let name = profile::chosen(arg.profile.as_deref())?;
    let slot = Slot::new(&profile::dir()?, &name)?;
    let profile = slot.load()?;
    let client = slot.client(&profile);
    Ok(Opened { slot, profile, client })
}

impl Opened {
    /// What to tell the user when the server refuses the saved session.
    pub fn expired(&self) -> anyhow::Error {
        let flag = if self.slot.name == profile::DEFAULT_PROFILE {
            String::new()
        } else {
            format!(" --profile {}", self.slot.name)
        };
        anyhow::anyhow!(
            "the session in profile `{}` ({} on {}) has expired or was revoked: log in again \
             with `edgechat login --server {} --user {}{flag}`",
            self.slot.name,
            self.profile.username,
            self.profile.server,
            self.profile.server,
            self.profile.username
        )
    }

    /// A client error, with advice: log in again, or check the server.
    pub fn explain(&self, e: ClientError) -> anyhow::Error {
        match e.code() {
            tonic::Code::Unauthenticated => self.expired(),
            tonic::Code::Unavailable => {
                anyhow::anyhow!("cannot reach {}: {e}", self.profile.url())
            }
            _ => anyhow::Error::new(e),
        }
    }

    /// `ListRooms`.
    pub async fn rooms(&self) -> Result<Vec<proto::Room>, ClientError> {
        let mut rooms = self.client.rooms().await?;
        Ok(rooms.list_rooms(proto::ListRoomsRequest {}).await?.into_inner().rooms)
    }

    /// The room `arg` names.
    pub async fn room(&self, arg: &str) -> anyhow::Result<proto::Room> {
        let rooms = self.rooms().await.map_err(|e| self.explain(e))?;
        Ok(names::resolve_room(&rooms, arg)?.clone())
    }

    /// Learns the names of the room's members and of any other ids given.
    pub async fn learn_names(
        &self,
        names: &mut Names,
        room: Option<&str>,
        ids: &[&str],
    ) -> Result<(), ClientError> {
        if let Some(room) = room {
            let mut rooms = self.client.rooms().await?;
            let members = rooms
                .list_members(proto::ListMembersRequest { room_id: room.into() })
                .await?
                .into_inner()
                .members;
            for m in members.iter().filter_map(|m| m.user.as_ref()) {
                names.learn(m);
            }
        }
        let mut unknown: Vec<String> = ids
            .iter()
            .filter(|i| !i.is_empty() && !names.knows(i))
            .map(|i| i.to_string())
            .collect();
        unknown.sort();
        unknown.dedup();
        for chunk in unknown.chunks(100) {
            let mut auth = self.client.auth().await?;
            let found = auth
                .lookup_users(proto::LookupUsersRequest {
                    usernames: Vec::new(),
                    user_ids: chunk.to_vec(),
                })
                .await?
                .into_inner()
                .users;
            for u in &found {
                names.learn(u);
            }
        }
        Ok(())
    }
}

/// The password: the first line of standard input, or asked for without echo.
fn password(args: &LoginArgs) -> anyhow::Result<String> {
    if args.password_stdin {
        return crate::cli::read_password_line();
    }
    let pw = rpassword::prompt_password(format!("Password for {}: ", args.user))
        .context("reading the password from the terminal (or use --password-stdin)")?;
    if args.register {
        let again = rpassword::prompt_password("Repeat it: ").context("reading the password")?;
        if again != pw {
            bail!("the passwords differ; nothing was registered");
        }
    }
    if pw.is_empty() {
        bail!("no password given");
    }
    Ok(pw)
}

/// An absolute path to an existing file that holds what `what` says (a PEM certificate or
/// key), or an error naming the file and why.
fn checked_file(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("{}: cannot read the {what}", path.display()))?;
    let bytes = std::fs::read(&abs)
        .with_context(|| format!("{}: cannot read the {what}", abs.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let tag = if what.contains("key") { "PRIVATE KEY-----" } else { "-----BEGIN CERTIFICATE-----" };
    if !text.contains(tag) {
        bail!("{}: not a PEM {what} (no `{tag}` block)", abs.display());
    }
    if !what.contains("key") {
        for pem in x509_parser::pem::Pem::iter_from_buffer(&bytes) {
            let pem = pem.map_err(|e| anyhow::anyhow!("{}: bad PEM: {e}", abs.display()))?;
            pem.parse_x509().map_err(|e| {
                anyhow::anyhow!("{}: not a valid X.509 certificate: {e}", abs.display())
            })?;
        }
    }
    Ok(abs)
}

/// Adds the CA file's name to a certificate failure, which rustls reports without it.
fn explain_tls(e: ClientError, ca: Option<&Path>) -> anyhow::Error {
    let text = e.to_string();
    let cert_problem = ["certificate", "UnknownIssuer", "NotValidForName", "BadEncoding"]
        .iter()
        .any(|w| text.contains(w));
    match (cert_problem, ca) {
        (true, Some(ca)) => anyhow::anyhow!(
            "{text}\nthe server's certificate does not verify against the CA in {}: is it that \
             server's CA (its DIR/certs/ca.pem), and does the URL name a host the certificate \
             is for?",
            ca.display()
        ),
        _ => anyhow::Error::new(e),
    }
}

/// `edgechat login`.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let name = profile::chosen(args.profile.profile.as_deref())?;
    let slot = Slot::new(&profile::dir()?, &name)?;
    let (server, transport) = match args.server.strip_prefix("h3://") {
        Some(rest) => (format!("https://{rest}"), Transport::H3),
        None if args.h3 => (args.server.clone(), Transport::H3),
        None => (args.server.clone(), Transport::H2),
    };
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        bail!("bad server URL `{}`: use https://host:port or h3://host:port", args.server);
    }
    let ca = match &args.ca {
        Some(ca) => Some(checked_file(ca, "CA certificate")?),
        None => {
            let dev = Path::new("./data/certs/ca.pem");
            if dev.exists() { Some(checked_file(dev, "CA certificate")?) } else { None }
        }
    };
    if server.starts_with("https://") && ca.is_none() {
        bail!(
            "no CA to verify {server} with: pass --ca FILE (the server's DIR/certs/ca.pem), or \
             run this where the server's ./data directory is"
        );
    }
    let cert = args.cert.as_deref().map(|c| checked_file(c, "client certificate")).transpose()?;
    let key = args.key.as_deref().map(|k| checked_file(k, "client key")).transpose()?;
    let mut p = Profile {
        server,
        transport,
        ca,
        cert,
        key,
        username: args.user.to_lowercase(),
        user_id: String::new(),
        refresh_token: String::new(),
    };
    let old = slot.load().ok();
    let password = password(&args)?;
    let client = Client::new(&p.url(), p.tls());
    let r = if args.register {
        client.register(&args.user, &password).await
    } else {
        client.login(&args.user, &password).await
    };
    let r = r.map_err(|e| explain_tls(e, p.ca.as_deref()))?;
    let user = r.user.clone().unwrap_or_default();
    p.username = user.username.clone();
    p.user_id = user.id.clone();
    p.refresh_token = r.refresh_token.clone();
    // The session this replaces is ended (best effort: it may have expired long ago).
    if let Some(old) = old.filter(|o| o.refresh_token != p.refresh_token) {
        let old_client = Client::new(&old.url(), old.tls());
        old_client.resume(&old.refresh_token);
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let mut auth = old_client.auth().await?;
            let refresh_token = old_client.refresh_token().unwrap_or_default();
            auth.logout(proto::LogoutRequest { refresh_token, all_devices: false }).await?;
            Ok::<_, ClientError>(())
        })
        .await;
    }
    slot.save(&p)?;
    println!(
        "{} {} on {} over {} (profile `{}`, {})",
        if args.register { "registered and logged in as" } else { "logged in as" },
        text::clean(&p.username),
        p.server,
        p.transport_name(),
        slot.name,
        slot.path.display()
    );
    Ok(())
}

/// `edgechat logout`.
pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let o = open(&args.profile)?;
    if !args.local {
        let revoked = async {
            let mut auth = o.client.auth().await?;
            let refresh_token = o.client.refresh_token().unwrap_or_default();
            auth.logout(proto::LogoutRequest { refresh_token, all_devices: args.all_devices })
                .await?;
            Ok::<_, ClientError>(())
        }
        .await;
        match revoked {
            Ok(()) => {}
            // Nothing left to revoke.
            Err(e) if e.code() == tonic::Code::Unauthenticated => {}
            Err(e) => bail!(
                "could not end the session on {}: {e}\nthe profile is kept; try again, or \
                 `edgechat logout --local` to only forget it here",
                o.profile.server
            ),
        }
    }
    o.slot.remove()?;
    println!(
        "logged out {} on {} (profile `{}` removed)",
        text::clean(&o.profile.username),
        o.profile.server,
        o.slot.name
    );
    Ok(())
}

/// `edgechat profiles`.
pub fn profiles() -> anyhow::Result<()> {
    let dir = profile::dir()?;
    let chosen = profile::chosen(None).unwrap_or_default();
    let all = profile::list(&dir)?;
    if all.is_empty() {
        println!("no profiles in {}: `edgechat login --user NAME` makes one", dir.display());
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for (name, p) in all {
        let mark = if name == chosen { '*' } else { ' ' };
        let line = match p {
            Ok(p) => format!(
                "{mark} {name:<12} {:<16} {} ({})",
                text::clean(&p.username),
                p.server,
                p.transport_name()
            ),
            Err(e) => format!("{mark} {name:<12} unreadable: {e}"),
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(())
}

/// The text to send: the arguments, or all of standard input (which must be UTF-8).
fn send_text(args: &SendArgs) -> anyhow::Result<String> {
    if !args.text.is_empty() && args.text != ["-"] {
        return Ok(args.text.join(" "));
    }
    if args.text.is_empty() && !args.attach.is_empty() {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
        .context("reading the message from standard input")?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "standard input is not UTF-8 (invalid byte at offset {}); nothing was sent",
            e.utf8_error().valid_up_to()
        )
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// How long `send` keeps retrying a send that failed in transit (same id: never doubled).
const SEND_PATIENCE: Duration = Duration::from_secs(30);

/// `edgechat send`.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let text = send_text(&args)?;
    let o = open(&args.profile)?;
    let mut attachment_ids = Vec::new();
    for path in &args.attach {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files = o.client.attachments().await?;
        let a = crate::client::upload(&mut files, &name, &bytes)
            .await
            .with_context(|| format!("uploading {}", path.display()))?;
        attachment_ids.push(a.id);
    }
    let cmid = crate::store::new_id('m');
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    let mut room: Option<proto::Room> = None;
    loop {
        let sent = async {
            let room_id = match &room {
                Some(r) => r.id.clone(),
                None => {
                    let rooms = o.rooms().await?;
                    match names::resolve_room(&rooms, &args.room) {
                        Ok(r) => room.insert(r.clone()).id.clone(),
                        Err(e) => return Ok(Err(e)),
                    }
                }
            };
            let mut chat = o.client.chat().await?;
            let req = proto::SendMessageRequest {
                room_id,
                client_message_id: cmid.clone(),
                text: text.clone(),
                attachment_ids: attachment_ids.clone(),
                ..Default::default()
            };
            Ok::<_, ClientError>(Ok(chat.send_message(req).await?.into_inner()))
        }
        .await;
        match sent {
            Ok(Ok(m)) => {
                println!("{}", m.seq);
                return Ok(());
            }
            Ok(Err(bad_name)) => return Err(bad_name.into()),
            // The server is down or restarting: the same id again, so never doubled.
            Err(e) if e.code() == tonic::Code::Unavailable && started.elapsed() < SEND_PATIENCE => {
                say!("edgechat: {e}; retrying in {} ms", backoff.as_millis());
                o.client.reset_channel().await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(o.explain(e)),
        }
    }
}

/// Writes a line to stdout; `false` once stdout is closed (`| head`), which ends the command
/// quietly.
fn out_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

fn print_event(json: bool, d: &events::Described) -> bool {
    if json {
        out_line(&serde_json::to_string(d).expect("an event serialises"))
    } else {
        out_line(&events::plain(d))
    }
}

/// `edgechat rooms`.
pub async fn rooms(args: RoomsArgs) -> anyhow::Result<()> {
    let o = open(&args.profile)?;
    let mut rooms = o.rooms().await.map_err(|e| o.explain(e))?;
    // Your rooms first, then public rooms you could join; by name within each.
    rooms.sort_by(|a, b| (a.my_role == 0, &a.name).cmp(&(b.my_role == 0, &b.name)));
    for r in &rooms {
        let line = if args.json {
            serde_json::json!({
                "id": r.id,
                "name": r.name,
                "topic": r.topic,
                "kind": names::kind_name(r),
                "role": names::role_name(r.my_role),
                "read_only": r.read_only,
                "unread": r.unread_count,
                "mentions": r.mention_count,
                "members": r.member_count,
                "last_seq": r.last_seq,
            })
            .to_string()
        } else {
            format!(
                "{:<24} {:<8} {:<10} {:>6} unread {:>4} @ {:>5} members  {}",
                text::clean(&r.name),
                names::kind_name(r),
                names::role_name(r.my_role),
                r.unread_count,
                r.mention_count,
                r.member_count,
                r.id
            )
        };
        if !out_line(&line) {
            break;
        }
    }
    Ok(())
}

/// `edgechat history`.
pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let o = open(&args.profile)?;
    let room = o.room(&args.room).await?;
    let mut events: Vec<proto::RoomEvent> = Vec::new();
    let mut before = 0;
    while events.len() < args.limit as usize {
        let want = (args.limit as usize - events.len()).min(500) as u32;
        let page = async {
            let mut chat = o.client.chat().await?;
            let req = proto::HistoryRequest {
                room_id: room.id.clone(),
                before_seq: before,
                after_seq: 0,
                limit: want,
                ..Default::default()
            };
            Ok::<_, ClientError>(chat.history(req).await?.into_inner())
        }
        .await
        .map_err(|e| o.explain(e))?;
        let Some(first) = page.events.first() else { break };
        before = first.seq;
        let more = page.has_more;
        events.splice(0..0, page.events);
        if !more {
            break;
        }
    }
    let mut names = Names::default();
    let ids: Vec<&str> = events.iter().flat_map(events::user_ids).collect();
    o.learn_names(&mut names, Some(&room.id), &ids).await.map_err(|e| o.explain(e))?;
    for e in &events {
        if !print_event(args.json, &events::describe(&room, e, &names)) {
            break;
        }
    }
    Ok(())
}

/// `edgechat tail`: the room's events as they come, resumed by itself after any failure.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let o = open(&args.profile)?;
    // A server that is down at the start is waited for, as one that goes down later is.
    let mut backoff = Duration::from_millis(200);
    let room = loop {
        match o.rooms().await {
            Ok(rooms) => break names::resolve_room(&rooms, &args.room)?.clone(),
            Err(e) if e.code() == tonic::Code::Unavailable => {
                say!(
                    "edgechat: cannot reach {}: {e}; retrying in {} s",
                    o.profile.url(),
                    backoff.as_secs_f32()
                );
                o.client.reset_channel().await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(o.explain(e)),
        }
    };
    let mut names = Names::default();
    o.learn_names(&mut names, Some(&room.id), &[]).await.map_err(|e| o.explain(e))?;
    let mut session = ChatSession::start(o.client.clone());
    session.subscribe(&room.id, args.after_seq);
    let me = o.client.user_id().unwrap_or_else(|| o.profile.user_id.clone());
    let mut lost = false;
    while let Some(ev) = session.next().await {
        match ev {
            SessionEvent::Connected => {
                if lost {
                    say!("edgechat: reconnected");
                    lost = false;
                }
            }
            SessionEvent::Disconnected { error, retry_in } => {
                if error.starts_with("UNAUTHENTICATED") {
                    return Err(o.expired());
                }
                lost = true;
                say!(
                    "edgechat: connection lost ({error}); reconnecting in {:.1} s",
                    retry_in.as_secs_f32()
                );
            }
            SessionEvent::Frame(server_frame::Kind::Event(e)) if e.room_id == room.id => {
                let ids = events::user_ids(&e);
                if ids.iter().any(|i| !names.knows(i)) {
                    // Best effort: an unknown sender shows as a short id.
                    let _ = o.learn_names(&mut names, None, &ids).await;
                }
                if !print_event(args.json, &events::describe(&room, &e, &names)) {
                    return Ok(());
                }
                if let Some(proto::room_event::Kind::Member(m)) = &e.kind
                    && m.user_id == me
                    && (m.left || m.removed)
                {
                    bail!("you are no longer a member of {}", text::clean(&room.name));
                }
            }
            SessionEvent::Frame(server_frame::Kind::Error(e))
                if e.room_id == room.id && e.client_message_id.is_empty() =>
            {
                bail!("{}: {}", e.code, text::clean(&e.message));
            }
            SessionEvent::Frame(_) => {}
        }
    }
    Ok(())
}
