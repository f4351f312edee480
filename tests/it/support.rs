//! The harness: start a server, connect clients, register users, forge tokens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use edgechat::client::GrpcChannel as Channel;
use edgechat::client::{self, TlsFiles};
use edgechat::config::RawConfig;
use edgechat::proto;

/// How long a test waits for anything before failing (generous: CI machines are loaded).
pub const WAIT: Duration = Duration::from_secs(20);

/// Which transport a test's clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/2 over TLS (or h2c).
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

tokio::task_local! {
    /// Set by `both_transports!` for the test body; servers started in it serve their
    /// clients over this transport.
    pub static TRANSPORT: Transport;
}

/// The transport of the running test (HTTP/2 outside `both_transports!`).
pub fn transport() -> Transport {
    TRANSPORT.try_with(|t| *t).unwrap_or(Transport::H2)
}

/// A running server in a temporary data directory.
pub struct TestServer {
    pub transport: Transport,
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    running: Option<edgechat::server::Running>,
    pub plaintext: bool,
    raw: RawConfig,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose send, change and search budgets are out of the way, for tests that make
    /// many changes quickly (a rate-limit test sets its own).
    pub async fn start_unthrottled() -> TestServer {
        Self::start_with(|c| {
            c.limits.send_rate_per_sec = 1e9;
            c.limits.send_burst = 100_000;
            c.limits.action_rate_per_sec = 1e9;
            c.limits.action_burst = 100_000;
            c.limits.search_rate_per_sec = 1e9;
            c.limits.search_burst = 100_000;
        })
        .await
    }

    /// A server whose configuration `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), tweak).await
    }

    /// A server with `other`'s signing keys and certificates (copied before its data
    /// directory is initialised): the nodes of one cluster trust each other's tokens and
    /// present the same CA.
    pub async fn start_sharing_keys(
        other: &TestServer,
        tweak: impl FnOnce(&mut RawConfig),
    ) -> TestServer {
        use std::os::unix::fs::DirBuilderExt;
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["keys", "certs"] {
            let to = dir.path().join("data").join(sub);
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&to).unwrap();
            for f in std::fs::read_dir(other.data_dir().join(sub)).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
        std::fs::set_permissions(
            dir.path().join("data"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Self::start_in(dir, tweak).await
    }

    async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut RawConfig)) -> TestServer {
        let mut raw = RawConfig {
            data_dir: dir.path().join("data").to_string_lossy().into_owned(),
            listen: "127.0.0.1:0".into(),
            ..RawConfig::default()
        };
        tweak(&mut raw);
        let config = raw.validate().expect("test config is valid");
        let plaintext = config.tls.insecure_plaintext;
        let running = edgechat::server::start(config).await.expect("server starts");
        TestServer {
            transport: transport(),
            addr: running.addr,
            running: Some(running),
            dir,
            plaintext,
            raw,
        }
    }

    /// Stops the server and starts it again on the same data directory and port.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and starts it again on the same data directory and port, its
    /// configuration changed by `tweak` from now on.
    pub async fn restart_with(&mut self, tweak: impl FnOnce(&mut RawConfig)) {
        self.stop().await;
        tweak(&mut self.raw);
        let mut raw = self.raw.clone();
        raw.listen = self.addr.to_string();
        let config = raw.validate().expect("test config is valid");
        let mut last_error = None;
        let started = tokio::time::timeout(WAIT, async {
            loop {
                match edgechat::server::start(config.clone()).await {
                    Ok(r) => return r,
                    // The port may take a moment to be free again.
                    Err(e) => {
                        last_error = Some(e.to_string());
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                }
            }
        })
        .await;
        let running = started.unwrap_or_else(|_| panic!("server restarts: {last_error:?}"));
        self.running = Some(running);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir().join("certs/ca.pem")
    }

    pub fn url(&self) -> String {
        let scheme = match (self.transport, self.plaintext) {
            (_, true) => "http",
            (Transport::H2, false) => "https",
            (Transport::H3, false) => "h3",
        };
        format!("{scheme}://localhost:{}", self.addr.port())
    }

    /// TLS files trusting the server's CA, without a client certificate.
    pub fn tls(&self) -> TlsFiles {
        TlsFiles { ca: Some(self.ca()), client_cert: None }
    }

    /// TLS files with the data directory's client certificate.
    pub fn tls_with_client_cert(&self) -> TlsFiles {
        let certs = self.data_dir().join("certs");
        TlsFiles {
            ca: Some(self.ca()),
            client_cert: Some((certs.join("client.pem"), certs.join("client.key"))),
        }
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        client::connect(&self.url(), &self.tls()).await.expect("connect")
    }

    /// Registers `name` and returns the tokens.
    pub async fn register(&self, name: &str) -> proto::AuthResponse {
        let mut c = client::auth_client(self.channel().await, None);
        c.register(proto::RegisterRequest {
            username: name.into(),
            password: "correct horse battery".into(),
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
        .into_inner()
    }

    /// Registers `name` and returns a connected user.
    pub async fn user(&self, name: &str) -> User {
        User::register(self.channel().await, name).await
    }

    /// Creates a global admin directly and logs them in.
    pub async fn admin(&self, name: &str) -> User {
        let api = self.running.as_ref().expect("server running").api();
        api.accounts
            .create_user(
                name,
                "correct horse battery",
                "",
                edgechat::config::Role::Admin,
                edgechat::clock::now_ms(),
            )
            .await
            .expect("create admin");
        let mut c = client::auth_client(self.channel().await, None);
        let r = c
            .login(proto::LoginRequest {
                username: name.into(),
                password: "correct horse battery".into(),
            })
            .await
            .expect("admin login")
            .into_inner();
        User {
            id: r.user.unwrap().id,
            name: name.into(),
            token: r.access_token,
            ch: self.channel().await,
        }
    }

    /// The server's signing keys, for forging tokens in tests.
    pub fn keyring(&self) -> edgechat::auth::keys::Keyring {
        edgechat::auth::keys::Keyring::load(&self.data_dir().join("keys")).expect("keys")
    }

    /// A bare TLS connection to the TCP listener offering `alpn`, for clients that misbehave
    /// below gRPC (or speak HTTP/1.1 by hand).
    pub async fn raw_tls(
        &self,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let roots = edgechat::transport::tls::load_roots(&self.ca()).unwrap();
        let provider = edgechat::transport::tls::provider();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap()
    }

    /// Where the running server serves `/metrics`, if it does.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running.as_ref().expect("server running").metrics_addr
    }

    /// The running server's services (to inspect state a client cannot see).
    pub fn api(&self) -> &edgechat::api::Api {
        self.running.as_ref().expect("server running").api()
    }

    /// Waits for a server that stops by itself (storage failure, say); its result.
    pub async fn wait_stopped(&mut self) -> Result<(), edgechat::server::ServeError> {
        let r = self.running.take().expect("server running");
        tokio::time::timeout(WAIT, r.wait()).await.expect("server stops in time")
    }

    /// Stops the server and waits for it.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            tokio::time::timeout(WAIT, r.wait())
                .await
                .expect("server stops in time")
                .expect("clean stop");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown();
        }
    }
}

/// Asserts a gRPC result failed with `code`, returning the message.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: tonic::Code) -> String {
    match r {
        Ok(v) => panic!("expected {code:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(s.code(), code, "message: {}", s.message());
            assert!(!s.message().is_empty(), "status {code:?} has no message");
            s.message().to_string()
        }
    }
}

/// A codec that sends and receives raw bytes, for requests a generated client cannot make
/// (malformed protobuf, oversized messages).
#[derive(Clone, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut v = vec![0; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// Calls `path` with raw request bytes and an optional bearer token.
pub async fn raw_call(
    ch: Channel,
    path: &'static str,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    grpc.unary(req, http::uri::PathAndQuery::from_static(path), RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// A logged-in user with a channel.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub token: String,
    pub ch: Channel,
}

impl User {
    /// Registers `name` over `ch` (the password every test user has).
    pub async fn register(ch: Channel, name: &str) -> User {
        let r = client::auth_client(ch.clone(), None)
            .register(proto::RegisterRequest {
                username: name.into(),
                password: "correct horse battery".into(),
                display_name: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("register {name}: {e}"))
            .into_inner();
        User { id: r.user.unwrap().id, name: name.to_lowercase(), token: r.access_token, ch }
    }

    pub fn rooms(&self) -> proto::room_service_client::RoomServiceClient<client::Authed> {
        client::rooms_client(self.ch.clone(), Some(&self.token))
    }
    pub fn chat(&self) -> proto::chat_service_client::ChatServiceClient<client::Authed> {
        client::chat_client(self.ch.clone(), Some(&self.token))
    }
    pub fn auth(&self) -> proto::auth_service_client::AuthServiceClient<client::Authed> {
        client::auth_client(self.ch.clone(), Some(&self.token))
    }
}

/// A client's end of one `Connect` stream, or of a `Listen` stream that it sends to with
/// `SendFrame` (the same helpers drive both).
pub struct Conn {
    tx: Frames,
    rx: tonic::Streaming<proto::ServerFrame>,
}

/// Where a [`Conn`]'s client frames go.
enum Frames {
    Connect(tokio::sync::mpsc::Sender<proto::ClientFrame>),
    /// `SendFrame` calls to this stream id; each must succeed.
    Listen {
        chat: proto::chat_service_client::ChatServiceClient<client::Authed>,
        stream_id: String,
    },
}

impl Conn {
    /// Opens a stream for `user`.
    pub async fn open(user: &User) -> Conn {
        Self::try_open(user).await.expect("Connect opens")
    }

    /// Opens a stream, returning the status if the server refuses it.
    pub async fn try_open(user: &User) -> Result<Conn, tonic::Status> {
        Self::open_with_token(user, &user.token.clone()).await
    }

    /// Opens a stream with a specific token.
    pub async fn open_with_token(user: &User, token: &str) -> Result<Conn, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut c = client::chat_client(user.ch.clone(), Some(token));
        let resp = c.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
        Ok(Conn { tx: Frames::Connect(tx), rx: resp.into_inner() })
    }

    /// Opens a `Listen` stream for `user`, subscribed to `subs`, and reads its first frame,
    /// which must be `Listening`.
    pub async fn listen(user: &User, subs: &[(&str, Option<u64>)]) -> Conn {
        let subscriptions = subs
            .iter()
            .map(|(room, after_seq)| proto::Subscribe {
                room_id: room.to_string(),
                after_seq: *after_seq,
            })
            .collect();
        let mut chat = user.chat();
        let rx = chat
            .listen(proto::ListenRequest { subscriptions })
            .await
            .expect("Listen opens")
            .into_inner();
        let mut c = Conn { tx: Frames::Listen { chat, stream_id: String::new() }, rx };
        let first = c.expect_frame().await;
        let proto::server_frame::Kind::Listening(l) = first else {
            panic!("a Listen stream starts with Listening, not {first:?}")
        };
        c.tx = Frames::Listen { chat: user.chat(), stream_id: l.stream_id };
        c
    }

    /// The `Listen` stream's id (empty for a `Connect` stream).
    pub fn stream_id(&self) -> &str {
        match &self.tx {
            Frames::Connect(_) => "",
            Frames::Listen { stream_id, .. } => stream_id,
        }
    }

    /// Sends a frame.
    pub async fn frame(&self, kind: proto::client_frame::Kind) {
        self.frame_raw(proto::ClientFrame { kind: Some(kind) }).await;
    }

    /// Sends a whole frame (possibly an empty one).
    pub async fn frame_raw(&self, frame: proto::ClientFrame) {
        match &self.tx {
            Frames::Connect(tx) => tx.send(frame).await.expect("stream open"),
            Frames::Listen { chat, stream_id } => {
                let req =
                    proto::SendFrameRequest { stream_id: stream_id.clone(), frame: Some(frame) };
                chat.clone().send_frame(req).await.expect("SendFrame takes the frame");
            }
        }
    }

    /// The next frame (fails the test after [`WAIT`]); `Err` when the stream ended with a
    /// status, `Ok(None)` when it ended cleanly.
    pub async fn next(&mut self) -> Result<Option<proto::server_frame::Kind>, tonic::Status> {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(r) => r.map(|f| f.and_then(|f| f.kind)),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next frame, which must exist.
    pub async fn expect_frame(&mut self) -> proto::server_frame::Kind {
        self.next().await.expect("stream alive").expect("stream not ended")
    }

    /// Skips frames until `pick` returns `Some`.
    pub async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&proto::server_frame::Kind) -> Option<T>,
    ) -> T {
        loop {
            let f = self.expect_frame().await;
            if let Some(t) = pick(&f) {
                return t;
            }
        }
    }

    /// The next `StreamError` (skipping other frames).
    pub async fn error(&mut self) -> proto::StreamError {
        self.until(
            |f| if let proto::server_frame::Kind::Error(e) = f { Some(e.clone()) } else { None },
        )
        .await
    }

    /// Subscribes and waits for `Subscribed`.
    pub async fn subscribe(&mut self, room: &str, after_seq: Option<u64>) -> proto::Subscribed {
        self.frame(proto::client_frame::Kind::Subscribe(proto::Subscribe {
            room_id: room.into(),
            after_seq,
        }))
        .await;
        self.until(|f| match f {
            proto::server_frame::Kind::Subscribed(s) => Some(s.clone()),
            proto::server_frame::Kind::Error(e) => panic!("subscribe failed: {e:?}"),
            _ => None,
        })
        .await
    }

    /// Sends a message frame.
    pub async fn send(&self, room: &str, cmid: &str, text: &str) {
        self.frame(proto::client_frame::Kind::Send(proto::Send {
            room_id: room.into(),
            client_message_id: cmid.into(),
            text: text.into(),
            ..Default::default()
        }))
        .await;
    }

    /// The next room event (skipping other frames).
    pub async fn event(&mut self) -> proto::RoomEvent {
        self.until(|f| match f {
            proto::server_frame::Kind::Event(e) => Some(e.clone()),
            _ => None,
        })
        .await
    }

    /// Round-trips a ping: every frame the server queued before it has been received.
    pub async fn ping(&mut self, nonce: u64) {
        self.frame(proto::client_frame::Kind::Ping(proto::Ping { nonce })).await;
        self.until(|f| {
            matches!(f, proto::server_frame::Kind::Pong(p) if p.nonce == nonce).then_some(())
        })
        .await;
    }

    /// Reads until the stream ends; its final status.
    pub async fn end_status(&mut self) -> Result<(), tonic::Status> {
        loop {
            match self.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(st) => return Err(st),
            }
        }
    }

    /// Pings and returns every frame that came before the pong.
    pub async fn frames_until_pong(&mut self, nonce: u64) -> Vec<proto::server_frame::Kind> {
        self.frame(proto::client_frame::Kind::Ping(proto::Ping { nonce })).await;
        let mut frames = Vec::new();
        loop {
            match self.expect_frame().await {
                proto::server_frame::Kind::Pong(p) if p.nonce == nonce => return frames,
                f => frames.push(f),
            }
        }
    }

    /// Closes the client side.
    pub fn close(self) {}
}

/// Text of a message event.
pub fn message_text(e: &proto::RoomEvent) -> Option<&str> {
    match &e.kind {
        Some(proto::room_event::Kind::Message(m)) => Some(&m.text),
        _ => None,
    }
}

/// Polls `f` until it returns `Some`, for at most `within` (then fails the test, saying
/// `what` did not happen).
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `edgechat` binary (built by cargo for the integration tests).
pub fn edgechat_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_edgechat"))
}

/// A running `edgechat serve` process.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    /// Its log lines (stderr, level info), read by a thread so the pipe never fills.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Waits (at most [`WAIT`]) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {WAIT:?}"),
            }
        }
    }

    /// Sends a signal (SIGTERM = 15, SIGINT = 2).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Waits (at most [`WAIT`]) for the process to exit.
    pub fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(std::time::Instant::now() < deadline, "still running after {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    /// A test that panics, or ends with the server still up, leaves no process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `edgechat serve` on an ephemeral port in `dir` with `env` added.
pub fn serve_binary(dir: &std::path::Path, env: &[(&str, &str)]) -> Served {
    serve_binary_at(dir, "127.0.0.1:0", env)
}

/// Starts `edgechat serve` on `listen` (to restart one on the port it had) in `dir`.
pub fn serve_binary_at(dir: &std::path::Path, listen: &str, env: &[(&str, &str)]) -> Served {
    use std::io::BufRead;
    let mut cmd = edgechat_bin();
    cmd.args(["serve", "--listen", listen, "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("edgechat serve starts");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    Served { child, port, log }
}

/// A channel to a server started with [`serve_binary`], once it answers.
pub async fn binary_channel(port: u16, ca: &std::path::Path) -> Channel {
    let tls = TlsFiles { ca: Some(ca.to_path_buf()), client_cert: None };
    let url = format!("https://localhost:{port}");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ch) = client::connect(&url, &tls).await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("server reachable")
}

/// A server whose send rate limit is out of the way (for volume tests).
pub async fn fast_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
    })
    .await
}

/// Creates a room owned by `owner`.
pub async fn create_room(owner: &User, name: &str, visibility: proto::Visibility) -> proto::Room {
    owner
        .rooms()
        .create_room(proto::CreateRoomRequest {
            name: name.into(),
            topic: String::new(),
            visibility: visibility as i32,
            read_only: false,
        })
        .await
        .expect("create room")
        .into_inner()
}

/// Creates a public room owned by `owner` and has `others` join it.
pub async fn room_with(owner: &User, others: &[&User]) -> String {
    let room = create_room(owner, "room", proto::Visibility::Public).await;
    for u in others {
        u.rooms()
            .join_room(proto::JoinRoomRequest { room_id: room.id.clone() })
            .await
            .expect("join");
    }
    room.id
}

/// `by` gives `u` the room role `role` in `room`.
pub async fn set_role(by: &User, room: &str, u: &User, role: proto::RoomRole) {
    by.rooms()
        .set_member_role(proto::SetMemberRoleRequest {
            room_id: room.into(),
            user_id: u.id.clone(),
            role: role as i32,
        })
        .await
        .expect("set role");
}

/// `by` bans `u` from `room`, saying `reason`.
pub async fn ban(by: &User, room: &str, u: &User, reason: &str) {
    by.rooms()
        .remove_member(proto::RemoveMemberRequest {
            room_id: room.into(),
            user_id: u.id.clone(),
            ban: true,
            reason: reason.into(),
        })
        .await
        .expect("ban");
}

/// Sends with the unary RPC.
pub async fn send_rpc(
    u: &User,
    room: &str,
    cmid: &str,
    text: &str,
) -> Result<proto::Message, tonic::Status> {
    u.chat()
        .send_message(proto::SendMessageRequest {
            room_id: room.into(),
            client_message_id: cmid.into(),
            text: text.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// A History call.
pub async fn history(
    u: &User,
    room: &str,
    before_seq: u64,
    after_seq: u64,
    limit: u32,
) -> Result<proto::HistoryResponse, tonic::Status> {
    thread_history(u, room, 0, before_seq, after_seq, limit).await
}

/// A History call over the thread of the root at `thread_seq` (0: the whole room).
pub async fn thread_history(
    u: &User,
    room: &str,
    thread_seq: u64,
    before_seq: u64,
    after_seq: u64,
    limit: u32,
) -> Result<proto::HistoryResponse, tonic::Status> {
    u.chat()
        .history(proto::HistoryRequest {
            room_id: room.into(),
            before_seq,
            after_seq,
            limit,
            thread_seq,
        })
        .await
        .map(|r| r.into_inner())
}

/// Every retained event of a room, through History paging forwards from its first retained
/// seq (`after_seq = 0` alone means "newest", so from seq 1 the first page is "below 2").
pub async fn all_events(u: &User, room: &str) -> Vec<proto::RoomEvent> {
    let first = history(u, room, 0, 0, 1).await.expect("history").first_seq;
    let mut out = if first <= 1 {
        history(u, room, 2, 0, 1).await.expect("history").events
    } else {
        let r = history(u, room, 0, first - 1, 500).await.expect("history");
        if !r.has_more {
            return r.events;
        }
        r.events
    };
    loop {
        let after = out.last().map(|e| e.seq).unwrap_or(0);
        if after == 0 {
            return out;
        }
        let r = history(u, room, 0, after, 500).await.expect("history");
        out.extend(r.events);
        if !r.has_more {
            return out;
        }
    }
}

/// Signs arbitrary JWT header and claims JSON with the server's own active key: tokens a
/// client could never get, to test every verification rule through the real server.
pub fn forge(s: &TestServer, header: serde_json::Value, claims: serde_json::Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let ring = s.keyring();
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = &ring.active().encoding;
    let sig =
        jsonwebtoken::crypto::sign(msg.as_bytes(), key, jsonwebtoken::Algorithm::EdDSA).unwrap();
    format!("{msg}.{sig}")
}

/// Bob follows a room and stops reading while alice sends 6 MB into it: the server's writes
/// to bob's stream block for good (his windows are full). Returns the room and bob's stream.
pub async fn stuck_reader(alice: User, bob: User) -> (String, Conn) {
    let room = room_with(&alice, &[&bob]).await;
    let mut stuck = Conn::open(&bob).await;
    stuck.subscribe(&room, None).await;
    let big = "x".repeat(4000);
    let mut a = Conn::open(&alice).await;
    for i in 0..1500 {
        a.send(&room, &format!("big{i}"), &big).await;
    }
    let last = |f: &proto::server_frame::Kind| {
        matches!(f, proto::server_frame::Kind::SendAck(x) if x.client_message_id == "big1499")
            .then_some(())
    };
    a.until(last).await;
    (room, stuck)
}
