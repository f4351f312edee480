//! The harness: start a server, connect clients, register users, forge tokens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use edgechat::client::{self, TlsFiles};
use edgechat::config::RawConfig;
use edgechat::proto;
use tonic::transport::Channel;

/// How long a test waits for anything before failing (generous: CI machines are loaded).
pub const WAIT: Duration = Duration::from_secs(20);

/// A running server in a temporary data directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    running: Option<edgechat::server::Running>,
    pub plaintext: bool,
}

impl TestServer {
    /// A server with the default configuration.
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut raw = RawConfig {
            data_dir: dir.path().join("data").to_string_lossy().into_owned(),
            listen: "127.0.0.1:0".into(),
            ..RawConfig::default()
        };
        tweak(&mut raw);
        let config = raw.validate().expect("test config is valid");
        let plaintext = config.tls.insecure_plaintext;
        let running = edgechat::server::start(config).await.expect("server starts");
        TestServer { addr: running.addr, running: Some(running), dir, plaintext }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir().join("certs/ca.pem")
    }

    pub fn url(&self) -> String {
        let scheme = if self.plaintext { "http" } else { "https" };
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
        })
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"))
        .into_inner()
    }

    /// Registers `name` and returns a connected user.
    pub async fn user(&self, name: &str) -> User {
        let r = self.register(name).await;
        User {
            id: r.user.unwrap().id,
            name: name.to_lowercase(),
            token: r.access_token,
            ch: self.channel().await,
        }
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
