//! A `Connect` session that survives the network: [`Client`] holds the server address, TLS
//! files and tokens (refreshing the access token before it expires); [`ChatSession`] keeps
//! one `Connect` stream open through a background task that
//! - remembers each subscribed room's last seq and resubscribes with `after_seq` after any
//!   failure, so the app sees every event once, in order, with no gap;
//! - keeps every send until its `SendAck` and re-sends the unacknowledged ones with their
//!   original `client_message_id` after reconnecting (the server deduplicates), so a flaky
//!   network neither loses nor duplicates a message;
//! - reconnects with exponential backoff (100 ms doubling to 5 s), and sends `Reauthenticate`
//!   with a refreshed token before the access token expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{ClientError, GrpcChannel, TlsFiles};
use crate::proto::{self, client_frame, server_frame};

/// Refresh the access token this long before it expires.
const REFRESH_AHEAD_MS: i64 = 60_000;
/// Backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A server, how to reach it, and the logged-in user's tokens. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    url: String,
    tls: TlsFiles,
    channel: tokio::sync::Mutex<Option<GrpcChannel>>,
    auth: Mutex<Option<proto::AuthResponse>>,
    /// One refresh at a time: two callers presenting the same refresh token would look like
    /// token theft to the server, which revokes the whole family.
    refreshing: tokio::sync::Mutex<()>,
    /// Told of every new set of tokens (see [`Client::on_tokens`]).
    on_tokens: Mutex<Option<TokenHook>>,
    /// Where the refresh token lives beyond this process (see [`Client::keep_tokens_in`]).
    store: Mutex<Option<Arc<dyn TokenStore>>>,
}

/// A refresh token kept beyond one process (a profile file), which several processes may
/// use at once: `edgechat tail` in one terminal and `edgechat send` in another. Refresh
/// tokens are single-use, and presenting a spent one revokes the whole family, so every
/// refresh runs under [`lock`](TokenStore::lock), starts from the newest saved token (another
/// process may have rotated it) and saves the new one before the lock is released.
pub trait TokenStore: Send + Sync {
    /// Blocks until this process alone may refresh; the guard releases it.
    fn lock(&self) -> Result<Box<dyn Send>, ClientError>;
    /// The newest saved refresh token.
    fn refresh_token(&self) -> Result<Option<String>, ClientError>;
    /// Saves a new set of tokens (called with the lock held).
    fn save(&self, tokens: &proto::AuthResponse) -> Result<(), ClientError>;
}

/// What [`Client::on_tokens`] takes.
pub type TokenHook = Box<dyn Fn(&proto::AuthResponse) + Send + Sync>;

impl Client {
    /// A client for `url` (see [`super::connect`] for the forms); nothing is dialled yet.
    pub fn new(url: &str, tls: TlsFiles) -> Client {
        Client {
            inner: Arc::new(ClientInner {
                url: url.to_string(),
                tls,
                channel: tokio::sync::Mutex::new(None),
                auth: Mutex::new(None),
                refreshing: tokio::sync::Mutex::new(()),
                on_tokens: Mutex::new(None),
                store: Mutex::new(None),
            }),
        }
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The current channel, dialling if there is none.
    pub async fn channel(&self) -> Result<GrpcChannel, ClientError> {
        let mut slot = self.inner.channel.lock().await;
        if let Some(ch) = slot.as_ref() {
            return Ok(ch.clone());
        }
        let ch = super::connect(&self.inner.url, &self.inner.tls).await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Forgets the channel so the next call dials again (after a transport failure).
    pub async fn reset_channel(&self) {
        *self.inner.channel.lock().await = None;
    }

    fn store(&self, r: proto::AuthResponse) -> proto::AuthResponse {
        *self.inner.auth.lock().expect("auth lock") = Some(r.clone());
        if let Some(hook) = self.inner.on_tokens.lock().expect("hook lock").as_ref() {
            hook(&r);
        }
        r
    }

    /// Calls `hook` with every new set of tokens: after login, register and each refresh.
    /// Refresh tokens rotate, and presenting a rotated one revokes its whole family, so
    /// whoever keeps the refresh token beyond this process (a profile file, say) must save
    /// each new one; this is where to do it. Replaces an earlier hook; the hook must not call
    /// `on_tokens` itself.
    pub fn on_tokens(&self, hook: impl Fn(&proto::AuthResponse) + Send + Sync + 'static) {
        *self.inner.on_tokens.lock().expect("hook lock") = Some(Box::new(hook));
    }

    /// Keeps the refresh token in `store`: every refresh then takes the store's lock,
    /// starts from its newest token and saves the next one (see [`TokenStore`]).
    pub fn keep_tokens_in(&self, store: Arc<dyn TokenStore>) {
        *self.inner.store.lock().expect("store lock") = Some(store);
    }

    /// Starts from a saved refresh token alone: the first call refreshes it.
    pub fn resume(&self, refresh_token: &str) {
        *self.inner.auth.lock().expect("auth lock") =
            Some(proto::AuthResponse { refresh_token: refresh_token.into(), ..Default::default() });
    }

    /// The current tokens, if logged in.
    pub fn tokens(&self) -> Option<proto::AuthResponse> {
        self.inner.auth.lock().expect("auth lock").clone()
    }

    /// Logs in and keeps the tokens.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<proto::AuthResponse, ClientError> {
        let ch = self.channel().await?;
        let r = super::auth_client(ch, None)
            .login(proto::LoginRequest { username: username.into(), password: password.into() })
            .await
            .map_err(status)?;
        Ok(self.store(r.into_inner()))
    }

    /// Registers and keeps the tokens.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
    ) -> Result<proto::AuthResponse, ClientError> {
        let ch = self.channel().await?;
        let r = super::auth_client(ch, None)
            .register(proto::RegisterRequest {
                username: username.into(),
                password: password.into(),
                display_name: String::new(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        Ok(self.store(r.into_inner()))
    }

    /// Uses tokens obtained elsewhere (a saved refresh token, say).
    pub fn set_tokens(&self, tokens: proto::AuthResponse) {
        self.store(tokens);
    }

    /// The logged-in user's id.
    pub fn user_id(&self) -> Option<String> {
        self.inner
            .auth
            .lock()
            .expect("auth lock")
            .as_ref()
            .and_then(|a| a.user.as_ref())
            .map(|u| u.id.clone())
    }

    /// A valid access token, refreshed first if it expires within a minute.
    pub async fn access_token(&self) -> Result<String, ClientError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let (token, refresh, expires) = {
            let auth = self.inner.auth.lock().expect("auth lock");
            let a = auth.as_ref().ok_or_else(|| ClientError::Transport("not logged in".into()))?;
            (a.access_token.clone(), a.refresh_token.clone(), a.access_expires_at_ms)
        };
        if expires - crate::clock::now_ms() > REFRESH_AHEAD_MS {
            return Ok(token);
        }
        let store = self.inner.store.lock().expect("store lock").clone();
        let Some(store) = store else {
            return Ok(self.refresh_with(refresh).await?.access_token);
        };
        let locked = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let guard = store.lock()?;
                Ok::<_, ClientError>((guard, store.refresh_token()?))
            })
            .await
            .map_err(|e| ClientError::Transport(format!("token store: {e}")))?
        };
        let (_guard, newest) = locked?;
        let r = self.refresh_with(newest.unwrap_or(refresh)).await?;
        // The old token is spent either way: failing here would throw the new one away too.
        if let Err(e) = store.save(&r) {
            tracing::warn!("could not save the new refresh token: {e}");
        }
        Ok(r.access_token)
    }

    async fn refresh_with(
        &self,
        refresh_token: String,
    ) -> Result<proto::AuthResponse, ClientError> {
        let ch = self.channel().await?;
        let r = super::auth_client(ch, None)
            .refresh(proto::RefreshRequest { refresh_token })
            .await
            .map_err(status)?;
        Ok(self.store(r.into_inner()))
    }

    /// The saved-or-current refresh token, for `Logout`.
    pub fn refresh_token(&self) -> Option<String> {
        self.inner.auth.lock().expect("auth lock").as_ref().map(|a| a.refresh_token.clone())
    }

    /// An `AuthService` client with the current token.
    pub async fn auth(
        &self,
    ) -> Result<proto::auth_service_client::AuthServiceClient<super::Authed>, ClientError> {
        let token = self.access_token().await?;
        Ok(super::auth_client(self.channel().await?, Some(&token)))
    }

    /// When the current access token expires (ms), if logged in.
    pub fn access_expires_at_ms(&self) -> Option<i64> {
        self.inner.auth.lock().expect("auth lock").as_ref().map(|a| a.access_expires_at_ms)
    }

    /// A `ChatService` client with the current token.
    pub async fn chat(
        &self,
    ) -> Result<proto::chat_service_client::ChatServiceClient<super::Authed>, ClientError> {
        let token = self.access_token().await?;
        Ok(super::chat_client(self.channel().await?, Some(&token)))
    }

    /// An `AttachmentService` client with the current token.
    pub async fn attachments(
        &self,
    ) -> Result<proto::attachment_service_client::AttachmentServiceClient<super::Authed>, ClientError>
    {
        let token = self.access_token().await?;
        Ok(super::attachments_client(self.channel().await?, Some(&token)))
    }

    /// A `RoomService` client with the current token.
    pub async fn rooms(
        &self,
    ) -> Result<proto::room_service_client::RoomServiceClient<super::Authed>, ClientError> {
        let token = self.access_token().await?;
        Ok(super::rooms_client(self.channel().await?, Some(&token)))
    }
}

fn status(s: tonic::Status) -> ClientError {
    ClientError::from(s)
}

/// What the app hears from a session. (Nearly every event is a `Frame`, so boxing it to shrink
/// the rare other variants would cost an allocation per frame for nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum SessionEvent {
    /// The stream is (re)established and every room resubscribed.
    Connected,
    /// The stream failed; the session retries after `retry_in`.
    Disconnected {
        /// What went wrong.
        error: String,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// A server frame. Room events arrive once each, in seq order per room, across
    /// reconnects.
    Frame(server_frame::Kind),
}

enum Command {
    Subscribe(String, Option<u64>),
    Unsubscribe(String),
    Send(proto::Send),
    Frame(client_frame::Kind),
}

/// A resilient `Connect` stream (see the module doc).
pub struct ChatSession {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<SessionEvent>,
}

impl ChatSession {
    /// Starts the session for a logged-in client.
    pub fn start(client: Client) -> ChatSession {
        let (commands, rx) = mpsc::unbounded_channel();
        let (tx, events) = mpsc::channel(1024);
        let task = Task {
            client,
            rooms: HashMap::new(),
            pending: Vec::new(),
            events: tx,
            connected_once: false,
        };
        tokio::spawn(task.run(rx));
        ChatSession { commands, events }
    }

    /// Follows a room: from after `after_seq`, or live from now when `None`; resumed by
    /// itself after any reconnect.
    pub fn subscribe(&self, room_id: &str, after_seq: Option<u64>) {
        let _ = self.commands.send(Command::Subscribe(room_id.into(), after_seq));
    }

    /// Stops following a room.
    pub fn unsubscribe(&self, room_id: &str) {
        let _ = self.commands.send(Command::Unsubscribe(room_id.into()));
    }

    /// Sends a message with a fresh `client_message_id` (returned); it is re-sent with the same
    /// id until acknowledged.
    pub fn send(&self, room_id: &str, text: &str) -> String {
        let cmid = crate::store::new_id('m');
        self.send_with_id(room_id, &cmid, text);
        cmid
    }

    /// Sends with a caller-chosen `client_message_id`.
    pub fn send_with_id(&self, room_id: &str, cmid: &str, text: &str) {
        self.send_frame(proto::Send {
            room_id: room_id.into(),
            client_message_id: cmid.into(),
            text: text.into(),
            ..Default::default()
        });
    }

    /// Replies to the message at `reply_to_seq` (in its thread) with a fresh
    /// `client_message_id` (returned); re-sent like [`ChatSession::send`].
    pub fn reply(&self, room_id: &str, reply_to_seq: u64, text: &str) -> String {
        let cmid = crate::store::new_id('m');
        self.send_frame(proto::Send {
            room_id: room_id.into(),
            client_message_id: cmid.clone(),
            text: text.into(),
            reply_to_seq,
            ..Default::default()
        });
        cmid
    }

    /// Sends `send` as it is; re-sent with its id until acknowledged.
    pub fn send_frame(&self, send: proto::Send) {
        let _ = self.commands.send(Command::Send(send));
    }

    /// Sends any other frame (typing, mark read, presence, ping); not retried.
    pub fn frame(&self, kind: client_frame::Kind) {
        let _ = self.commands.send(Command::Frame(kind));
    }

    /// The next event; `None` once the session has stopped.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }
}

struct Task {
    client: Client,
    /// Room -> last seq delivered (None: live-only, not yet subscribed).
    rooms: HashMap<String, Option<u64>>,
    /// Sends not yet acknowledged, in order: (cmid, room, text).
    pending: Vec<proto::Send>,
    events: mpsc::Sender<SessionEvent>,
    /// Set when a connection got through; resets the backoff.
    connected_once: bool,
}

enum Ended {
    /// The app dropped the session.
    Stop,
    /// The stream failed or ended; reconnect.
    Retry(String),
}

type Inbound = tonic::Streaming<proto::ServerFrame>;

/// Opens the stream. Boxed with an explicit `Send` bound: inferring it through tonic's generic
/// client inside the session's future trips the compiler's higher-ranked lifetime check.
fn open_stream(
    ch: GrpcChannel,
    token: String,
    rx: mpsc::Receiver<proto::ClientFrame>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Inbound, tonic::Status>> + Send>> {
    Box::pin(async move {
        let mut client = super::chat_client(ch, Some(&token));
        client.connect(ReceiverStream::new(rx)).await.map(|r| r.into_inner())
    })
}

fn frame(kind: client_frame::Kind) -> proto::ClientFrame {
    proto::ClientFrame { kind: Some(kind) }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.connected(&mut commands).await {
                Ended::Stop => return,
                Ended::Retry(error) => {
                    self.client.reset_channel().await;
                    let retry_in = backoff;
                    if self
                        .events
                        .send(SessionEvent::Disconnected { error, retry_in })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    // Commands keep queueing meanwhile (sends are remembered).
                    tokio::time::sleep(retry_in).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    if matches!(self.drain(&mut commands), Ended::Stop) {
                        return;
                    }
                }
            }
            if self.events.is_closed() {
                return;
            }
            // A session that reached the server resets the backoff.
            if self.connected_once {
                backoff = BACKOFF_MIN;
                self.connected_once = false;
            }
        }
    }

    /// Applies queued commands without a stream (while disconnected).
    fn drain(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        loop {
            match commands.try_recv() {
                Ok(cmd) => self.remember(&cmd),
                Err(mpsc::error::TryRecvError::Empty) => return Ended::Retry(String::new()),
                Err(mpsc::error::TryRecvError::Disconnected) => return Ended::Stop,
            }
        }
    }

    fn remember(&mut self, cmd: &Command) {
        match cmd {
            Command::Subscribe(room, after) => {
                self.rooms.insert(room.clone(), *after);
            }
            Command::Unsubscribe(room) => {
                self.rooms.remove(room);
            }
            Command::Send(send) => {
                if !self.pending.iter().any(|p| p.client_message_id == send.client_message_id) {
                    self.pending.push(send.clone());
                }
            }
            Command::Frame(_) => {}
        }
    }

    async fn connected(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        let (token, ch) = match async {
            Ok::<_, ClientError>((self.client.access_token().await?, self.client.channel().await?))
        }
        .await
        {
            Ok(v) => v,
            Err(e) => return Ended::Retry(e.to_string()),
        };
        // Room for every resubscription and re-send queued below, before the stream opens.
        let (out, rx) =
            mpsc::channel::<proto::ClientFrame>(256 + self.rooms.len() + self.pending.len());
        // Resubscribe and re-send before anything else, in order.
        for (room, after) in &self.rooms {
            let _ = out.try_send(frame(client_frame::Kind::Subscribe(proto::Subscribe {
                room_id: room.clone(),
                after_seq: *after,
            })));
        }
        let mut inbound = match open_stream(ch, token, rx).await {
            Ok(r) => r,
            Err(s) => return Ended::Retry(ClientError::from(s).to_string()),
        };
        for send in &self.pending {
            let send = send.clone();
            if out.send(frame(client_frame::Kind::Send(send))).await.is_err() {
                return Ended::Retry("stream closed while re-sending".into());
            }
        }
        self.connected_once = true;
        if self.events.send(SessionEvent::Connected).await.is_err() {
            return Ended::Stop;
        }
        loop {
            let reauth_in = self
                .client
                .access_expires_at_ms()
                .map(|t| {
                    Duration::from_millis(
                        (t - REFRESH_AHEAD_MS - crate::clock::now_ms()).max(1_000) as u64,
                    )
                })
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(f)) => {
                        let Some(kind) = f.kind else { continue };
                        match self.on_frame(kind).await {
                            Some(Ended::Stop) => return Ended::Stop,
                            Some(e) => return e,
                            None => {}
                        }
                    }
                    Ok(None) => return Ended::Retry("stream ended".into()),
                    Err(s) => return Ended::Retry(ClientError::from(s).to_string()),
                },
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Ended::Stop };
                    self.remember(&cmd);
                    let f = match cmd {
                        Command::Subscribe(room, after) => client_frame::Kind::Subscribe(proto::Subscribe { room_id: room, after_seq: after }),
                        Command::Unsubscribe(room) => client_frame::Kind::Unsubscribe(proto::Unsubscribe { room_id: room }),
                        Command::Send(send) => client_frame::Kind::Send(send),
                        Command::Frame(k) => k,
                    };
                    if out.send(frame(f)).await.is_err() {
                        return Ended::Retry("stream closed".into());
                    }
                }
                () = tokio::time::sleep(reauth_in) => {
                    match self.client.access_token().await {
                        Ok(t) => {
                            let _ = out.send(frame(client_frame::Kind::Reauthenticate(proto::Reauthenticate { access_token: t }))).await;
                        }
                        Err(e) => return Ended::Retry(e.to_string()),
                    }
                }
            }
        }
    }

    /// Tracks seqs and acks; `Some` ends this connection.
    async fn on_frame(&mut self, kind: server_frame::Kind) -> Option<Ended> {
        use server_frame::Kind as K;
        match &kind {
            K::Subscribed(s) => {
                if let Some(slot) = self.rooms.get_mut(&s.room_id)
                    && slot.is_none()
                {
                    *slot = Some(s.last_seq);
                }
            }
            K::Event(e) => {
                // Events of a room no longer followed are dropped.
                let slot = self.rooms.get_mut(&e.room_id)?;
                if slot.is_some_and(|last| e.seq <= last) {
                    return None; // already delivered before a reconnect
                }
                *slot = Some(e.seq);
            }
            K::SendAck(a) => self.pending.retain(|p| p.client_message_id != a.client_message_id),
            K::Error(e) if !e.client_message_id.is_empty() && e.code != "UNAVAILABLE" => {
                // Refused for good (permission, bad input, rate limit): the app decides.
                self.pending.retain(|p| p.client_message_id != e.client_message_id);
            }
            _ => {}
        }
        let going_away = matches!(kind, K::GoingAway(_));
        if self.events.send(SessionEvent::Frame(kind)).await.is_err() {
            return Some(Ended::Stop);
        }
        going_away.then(|| Ended::Retry("server is going away".into()))
    }
}
