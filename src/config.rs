//! Configuration: one TOML file, every key overridable by an `EDGECHAT_*` environment variable
//! and by command-line flags, validated once at start.
//!
//! Two steps (STYLE.md 17): [`RawConfig`] is what the file and the environment say, with serde
//! defaults; [`RawConfig::validate`] turns it into a [`Config`] the rest of the code trusts, or
//! an error naming the bad key. Nothing else reads environment variables.
//!
//! Environment names are `EDGECHAT_` + the key path in upper case joined by `_`:
//! `listen` is `EDGECHAT_LISTEN`, `[tls] client_auth` is `EDGECHAT_TLS_CLIENT_AUTH`.
//! `config/edgechat.example.toml` documents every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The name of the config file `edgechat init` writes into a data directory and `serve` reads
/// from there when no `--config` is given.
pub const CONFIG_FILE_NAME: &str = "edgechat.toml";

/// A configuration problem, always naming the key (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, including the key.
        message: String,
    },
    /// A key has a value that makes no sense.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The key path, e.g. `tls.client_auth`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

/// What the file and environment say, before validation. Field names are the TOML keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where keys, certificates and the database live.
    pub data_dir: String,
    /// TCP and UDP address to serve on.
    pub listen: String,
    /// Extra DNS names for the generated server certificate.
    pub hostnames: Vec<String>,
    /// TLS settings.
    pub tls: RawTls,
    /// Users and tokens.
    pub auth: RawAuth,
    /// Rooms.
    pub rooms: RawRooms,
    /// Bounds on everything a client can make the server hold.
    pub limits: RawLimits,
    /// The database.
    pub store: RawStore,
    /// Snapshots of the database in the data directory.
    pub backup: RawBackup,
    /// How long room events are kept.
    pub retention: RawRetention,
    /// Files attached to messages.
    pub attachments: RawAttachments,
    /// Prometheus metrics.
    pub metrics: RawMetrics,
    /// HTTP/3 over QUIC.
    pub quic: RawQuic,
    /// Cluster mode (docs/cluster.md): off unless `nats_urls` is set.
    pub cluster: RawCluster,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            data_dir: "./data".into(),
            listen: "0.0.0.0:7443".into(),
            hostnames: Vec::new(),
            tls: RawTls::default(),
            auth: RawAuth::default(),
            rooms: RawRooms::default(),
            limits: RawLimits::default(),
            store: RawStore::default(),
            backup: RawBackup::default(),
            retention: RawRetention::default(),
            attachments: RawAttachments::default(),
            metrics: RawMetrics::default(),
            quic: RawQuic::default(),
            cluster: RawCluster::default(),
        }
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// NATS servers, `nats://HOST:PORT,...` (a bare `HOST:PORT` gets `nats://`); empty:
    /// single-node mode.
    pub nats_urls: String,
    /// Replicas of the stream (3: survives the loss of one NATS server).
    pub replicas: usize,
    /// How long a starting node waits for NATS and the stream before it gives up, seconds.
    pub connect_wait_secs: u64,
    /// A NATS `.creds` file (decentralised auth); empty: none.
    pub credentials: String,
    /// CA file to verify the NATS servers with (TLS); empty: no TLS.
    pub ca: String,
    /// Client certificate for NATS (with `client_key`); empty: none.
    pub client_cert: String,
    /// Its key.
    pub client_key: String,
    /// This node's name in the NATS servers' connection lists; empty: `edgechat`.
    pub node_name: String,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            nats_urls: String::new(),
            replicas: 3,
            connect_wait_secs: 30,
            credentials: String::new(),
            ca: String::new(),
            client_cert: String::new(),
            client_key: String::new(),
            node_name: String::new(),
        }
    }
}

/// Validated `[cluster]`: present only in cluster mode.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, at least one.
    pub nats_urls: Vec<String>,
    /// Stream replicas.
    pub replicas: usize,
    /// Start-up wait for NATS.
    pub connect_wait: Duration,
    /// `.creds` file.
    pub credentials: Option<PathBuf>,
    /// CA file.
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Connection name.
    pub node_name: String,
}

/// `[quic]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQuic {
    /// Serve HTTP/3 on UDP at the `listen` address.
    pub enabled: bool,
    /// Idle timeout, seconds (the smaller of both sides' applies).
    pub idle_timeout_secs: u64,
    /// Keep-alive interval, seconds; below the idle timeout.
    pub keep_alive_interval_secs: u64,
    /// Concurrent request streams per connection.
    pub max_streams: u32,
    /// Per-stream receive window, KiB.
    pub stream_receive_window_kib: u32,
    /// Per-connection receive window, KiB.
    pub receive_window_kib: u32,
    /// Above this many handshakes in progress, new clients must prove their address first
    /// (stateless retry).
    pub retry_above_handshakes: usize,
}

impl Default for RawQuic {
    fn default() -> Self {
        RawQuic {
            enabled: true,
            idle_timeout_secs: 30,
            keep_alive_interval_secs: 10,
            max_streams: 100,
            stream_receive_window_kib: 256,
            receive_window_kib: 4096,
            retry_above_handshakes: 256,
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// `off`, `optional` or `required`.
    pub client_auth: String,
    /// CA that client certificates must chain to; empty = `<data_dir>/certs/ca.pem`.
    pub client_ca: String,
    /// Server certificate chain; empty = `<data_dir>/certs/server.pem`.
    pub cert: String,
    /// Server private key; empty = `<data_dir>/certs/server.key`.
    pub key: String,
    /// Serve plain-text HTTP/2 (h2c) for a TLS-terminating proxy.
    pub insecure_plaintext: bool,
    /// A client certificate's subject name must equal the token's username.
    pub bind_client_cert: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            client_auth: "off".into(),
            client_ca: String::new(),
            cert: String::new(),
            key: String::new(),
            insecure_plaintext: false,
            bind_client_cert: false,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// `open`, `closed` or `invite`.
    pub registration: String,
    /// Global role of a new registration: `guest`, `member` or `admin`.
    pub default_role: String,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// Access token lifetime in seconds.
    pub access_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_ttl_secs: u64,
    /// Failed logins per username before delays start.
    pub login_free_failures: u32,
    /// Longest delay between attempts for one username, in seconds.
    pub login_max_delay_secs: u64,
    /// Password-hashing threads (each holds 19 MiB once used); 0 = one per core.
    pub hash_workers: usize,
    /// Password hashes that may wait for a worker; beyond, `RESOURCE_EXHAUSTED` at once.
    pub hash_queue: usize,
    /// Verify-only public keys of an outside issuer: PEM public-key files or JWKS files
    /// (relative paths are relative to the data directory).
    pub trusted_keys: Vec<String>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            registration: "open".into(),
            default_role: "member".into(),
            issuer: "edgechat".into(),
            audience: "edgechat".into(),
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 30 * 24 * 3600,
            login_free_failures: 5,
            login_max_delay_secs: 300,
            hash_workers: 0,
            hash_queue: 64,
            trusted_keys: Vec::new(),
        }
    }
}

/// `[rooms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRooms {
    /// Whether global members (not only admins) may create private rooms.
    pub members_may_create_private: bool,
}

impl Default for RawRooms {
    fn default() -> Self {
        RawRooms { members_may_create_private: true }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// HTTP/2 `MAX_CONCURRENT_STREAMS` per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval, seconds.
    pub keepalive_interval_secs: u64,
    /// HTTP/2 keep-alive ping timeout, seconds.
    pub keepalive_timeout_secs: u64,
    /// TLS handshake timeout, seconds.
    pub tls_handshake_timeout_secs: u64,
    /// Largest request header block, bytes.
    pub max_header_bytes: u32,
    /// Largest decoded gRPC message, bytes.
    pub max_message_bytes: usize,
    /// Largest message text, bytes.
    pub max_text_bytes: usize,
    /// Open connections per transport at most; further TCP ones wait in the backlog,
    /// further QUIC ones are refused.
    pub max_connections: usize,
    /// Open connections from one source address (IPv6: one /64), both transports together.
    pub max_connections_per_ip: usize,
    /// A connection must make an authenticated request within this many seconds.
    pub auth_timeout_secs: u64,
    /// An authenticated connection with no open request is closed after this many seconds.
    pub idle_connection_secs: u64,
    /// Sends per second per user (token bucket rate).
    pub send_rate_per_sec: f64,
    /// Token bucket burst.
    pub send_burst: u32,
    /// Other changes per second per user (edits, deletes, read markers that move, room
    /// creation, invites, joins, leaves, moderation): token bucket rate.
    pub action_rate_per_sec: f64,
    /// Its burst.
    pub action_burst: u32,
    /// Searches per second per user (each reads the index of every room the user is in).
    pub search_rate_per_sec: f64,
    /// Its burst.
    pub search_burst: u32,
    /// Rooms one Connect stream may subscribe to.
    pub max_subscriptions_per_stream: usize,
    /// Connect streams one user may hold open.
    pub max_streams_per_user: usize,
    /// A stream whose outbound side is stuck this long is closed, seconds.
    pub stuck_stream_timeout_secs: u64,
    /// Notifications kept per user; the oldest are dropped.
    pub max_notifications_per_user: usize,
    /// Seconds a user stays online after their last stream closed.
    pub presence_grace_secs: u64,
    /// At shutdown, seconds clients get to finish before the server closes what is left.
    pub shutdown_drain_secs: u64,
    /// Seconds between a stream's re-reads of its token version (a backstop: revocations
    /// reach streams at once with their commit).
    pub token_recheck_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_concurrent_streams: 100,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            max_message_bytes: 64 * 1024,
            max_text_bytes: 4096,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: 256,
            auth_timeout_secs: 30,
            idle_connection_secs: 300,
            send_rate_per_sec: 20.0,
            send_burst: 50,
            action_rate_per_sec: 10.0,
            action_burst: 50,
            search_rate_per_sec: 5.0,
            search_burst: 20,
            max_subscriptions_per_stream: 500,
            max_streams_per_user: 16,
            stuck_stream_timeout_secs: 30,
            max_notifications_per_user: 10_000,
            presence_grace_secs: 15,
            shutdown_drain_secs: 10,
            token_recheck_secs: 5,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Address for `GET /metrics` (Prometheus text); empty = off.
    pub listen: String,
}

/// `[retention]`. Both limits off (0) by default: history is kept forever.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Room events older than this many days are removed; 0 = no age limit.
    pub max_age_days: u64,
    /// At most this many of each room's newest events are kept; 0 = no count limit.
    pub max_events_per_room: u64,
}

/// `[attachments]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAttachments {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Bytes one user's uploads and attachments may take together.
    pub per_user_bytes: u64,
    /// Unfinished uploads and attachments on no message are deleted after this long.
    pub unposted_secs: u64,
}

impl Default for RawAttachments {
    fn default() -> Self {
        RawAttachments { max_bytes: 10 << 20, per_user_bytes: 1 << 30, unposted_secs: 86_400 }
    }
}

/// Validated `[attachments]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachmentsConfig {
    /// Largest file.
    pub max_bytes: u64,
    /// One user's uploads and attachments together.
    pub per_user_bytes: u64,
    /// How long an unfinished upload, or an attachment no message carries, is kept.
    pub unposted: Duration,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        let r = RawAttachments::default();
        AttachmentsConfig {
            max_bytes: r.max_bytes,
            per_user_bytes: r.per_user_bytes,
            unposted: Duration::from_secs(r.unposted_secs),
        }
    }
}

/// Validated `[retention]`: what the background pruning removes (`retention::Rules`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Events older than this go.
    pub max_age: Option<Duration>,
    /// Events beyond this many of a room's newest go.
    pub max_events_per_room: Option<u64>,
}

/// The smallest `max_events_per_room`: fewer would leave a client that was away for a minute
/// nothing to resume from.
pub const MIN_EVENTS_PER_ROOM: u64 = 100;

/// `[backup]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackup {
    /// Seconds between snapshots of the database into `<data_dir>/snapshots`; 0 = none.
    pub snapshot_interval_secs: u64,
    /// Snapshots kept (the oldest are deleted).
    pub keep: usize,
}

impl Default for RawBackup {
    fn default() -> Self {
        RawBackup { snapshot_interval_secs: 300, keep: 3 }
    }
}

/// Validated `[backup]`.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Time between snapshots, `None` for no snapshots.
    pub interval: Option<Duration>,
    /// Snapshots kept.
    pub keep: usize,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// redb page cache, MiB.
    pub cache_mib: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { cache_mib: 64 }
    }
}

/// QUIC / HTTP/3 bounds: `[quic]` and the shared `[limits]` keys (the defaults are the
/// client's too: a client endpoint uses the same windows and timeouts).
#[derive(Debug, Clone)]
pub struct QuicLimits {
    /// Concurrent request streams per connection (like HTTP/2 max_concurrent_streams).
    pub max_bidi_streams: u32,
    /// Concurrent unidirectional streams: HTTP/3 needs 3 per side (control, QPACK
    /// encoder/decoder) plus possibly a grease stream.
    pub max_uni_streams: u32,
    /// Per-stream receive window (bytes); bounds one stream's buffered data.
    pub stream_receive_window: u32,
    /// Per-connection receive window (bytes); quinn's default is unlimited.
    pub receive_window: u32,
    /// Per-connection send window (bytes).
    pub send_window: u64,
    /// Idle timeout (the smaller of both sides' values applies).
    pub idle_timeout: Duration,
    /// Keep-alive PING interval, below `idle_timeout`.
    pub keep_alive: Duration,
    /// QUIC+TLS handshake timeout, and timeout for a request's HEADERS frame.
    pub handshake_timeout: Duration,
    /// Above this many handshakes in progress, unvalidated clients get a stateless Retry.
    pub retry_above_handshakes: usize,
    /// Max decoded request header section (SETTINGS_MAX_FIELD_SECTION_SIZE).
    pub max_header_bytes: u64,
    /// Open QUIC connections at most (`limits.max_connections`); further ones are refused
    /// (the client retries).
    pub max_connections: usize,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            max_bidi_streams: 100,
            max_uni_streams: 8,
            stream_receive_window: 256 * 1024,
            receive_window: 4 * 1024 * 1024,
            send_window: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            retry_above_handshakes: 256,
            max_header_bytes: 16 * 1024,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Whether TLS clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Certificates are not requested.
    Off,
    /// Requested and verified against the client CA when presented.
    Optional,
    /// A certificate chaining to the client CA is required.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(ClientAuth::Off),
            "optional" => Ok(ClientAuth::Optional),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!("`{other}` is not one of off, optional, required")),
        }
    }
}

/// Who may register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Anyone may call `Register`.
    Open,
    /// Only admins create users (`edgechat user add`, `AdminService.CreateUser`).
    Closed,
    /// `Register` needs a single-use code from `AdminService.CreateInviteCode`.
    Invite,
}

impl std::str::FromStr for Registration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Registration::Open),
            "closed" => Ok(Registration::Closed),
            "invite" => Ok(Registration::Invite),
            other => Err(format!("`{other}` is not one of open, closed, invite")),
        }
    }
}

/// A global role, as named in config and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// May join public rooms and talk.
    Guest,
    /// May also create rooms.
    Member,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "guest" => Ok(Role::Guest),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            other => Err(format!("`{other}` is not one of guest, member, admin")),
        }
    }
}

/// The validated configuration. Everything here has been checked; no `Option` checks deeper in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// TCP (and later UDP) listen address.
    pub listen: SocketAddr,
    /// Extra names for the generated server certificate.
    pub hostnames: Vec<String>,
    /// TLS.
    pub tls: TlsConfig,
    /// Users and tokens.
    pub auth: AuthConfig,
    /// Whether global members may create private rooms.
    pub members_may_create_private: bool,
    /// Bounds.
    pub limits: Limits,
    /// redb cache size in bytes.
    pub store_cache_bytes: usize,
    /// HTTP/3 limits, or `None` when HTTP/3 is off.
    pub quic: Option<QuicLimits>,
    /// Snapshots.
    pub backup: BackupConfig,
    /// What room history is removed, and when.
    pub retention: RetentionConfig,
    /// Attachments.
    pub attachments: AttachmentsConfig,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Cluster mode, or `None` for a single node.
    pub cluster: Option<ClusterConfig>,
}

/// Validated `[tls]`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// Client CA file.
    pub client_ca: PathBuf,
    /// Server certificate chain file.
    pub cert: PathBuf,
    /// Server key file.
    pub key: PathBuf,
    /// Serve h2c instead of TLS.
    pub insecure_plaintext: bool,
    /// Require the client certificate's name to equal the token's username.
    pub bind_client_cert: bool,
}

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Who may register.
    pub registration: Registration,
    /// Role of new registrations.
    pub default_role: Role,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Failures before login delays start.
    pub login_free_failures: u32,
    /// Cap on the login delay.
    pub login_max_delay: Duration,
    /// Password-hashing threads (at least 1).
    pub hash_workers: usize,
    /// Hashes waiting for a worker at most.
    pub hash_queue: usize,
    /// Verify-only key files (`Keyring::trust`), resolved against the data directory.
    pub trusted_keys: Vec<PathBuf>,
}

/// Validated `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// HTTP/2 max concurrent streams.
    pub max_concurrent_streams: u32,
    /// Keep-alive ping interval.
    pub keepalive_interval: Duration,
    /// Keep-alive ping timeout.
    pub keepalive_timeout: Duration,
    /// TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// Max header block size.
    pub max_header_bytes: u32,
    /// Max decoded message size.
    pub max_message_bytes: usize,
    /// Max text size.
    pub max_text_bytes: usize,
    /// Max open connections per transport.
    pub max_connections: usize,
    /// Max open connections per source address, both transports.
    pub max_connections_per_ip: usize,
    /// Time to the first authenticated request.
    pub auth_timeout: Duration,
    /// Time an authenticated connection may sit with no request.
    pub idle_connection: Duration,
    /// Send rate per user per second.
    pub send_rate_per_sec: f64,
    /// Send burst.
    pub send_burst: u32,
    /// Other changes per user per second.
    pub action_rate_per_sec: f64,
    /// Their burst.
    pub action_burst: u32,
    /// Searches per user per second.
    pub search_rate_per_sec: f64,
    /// Their burst.
    pub search_burst: u32,
    /// Max rooms per stream.
    pub max_subscriptions_per_stream: usize,
    /// Max streams per user.
    pub max_streams_per_user: usize,
    /// Stuck outbound stream deadline.
    pub stuck_stream_timeout: Duration,
    /// Notifications kept per user.
    pub max_notifications_per_user: usize,
    /// Presence grace period.
    pub presence_grace: Duration,
    /// Longest drain at shutdown.
    pub shutdown_drain: Duration,
    /// Streams' token re-check period.
    pub token_recheck: Duration,
}

/// Token-bucket rates (per second) a config may set: one per 1,000 s up to "unlimited".
/// Outside them the waits computed from a rate overflow a `Duration` (1e-20/s did, and
/// panicked under the limiter's lock). NaN fails every range check.
const MIN_RATE: f64 = 0.001;

/// Open connections per transport by default: about 100-200 MB of connection state at the
/// measured 25-50 KiB each, which leaves room on the 1 GB board the defaults are for.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const MAX_RATE: f64 = 1e9;

impl RawConfig {
    /// Reads a TOML file (unknown keys are errors, so typos do not pass silently).
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text)
            .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `EDGECHAT_*` overrides from `vars` (normally `std::env::vars()`). Each known key
    /// has exactly one variable name; variables naming no key are left for others (the CLI's
    /// `EDGECHAT_PROFILE`, say).
    pub fn apply_env(
        self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let mut tree = toml::Value::try_from(&self)
            .map_err(|e| invalid("(config)", format!("cannot represent config: {e}")))?;
        let vars: Vec<(String, String)> =
            vars.into_iter().filter(|(k, _)| k.starts_with("EDGECHAT_")).collect();
        if vars.is_empty() {
            return Ok(self);
        }
        override_leaves(&mut tree, "", &vars)?;
        tree.try_into().map_err(|e: toml::de::Error| invalid("(environment)", e.to_string()))
    }

    /// Checks every key and resolves defaults that depend on others (certificate paths).
    pub fn validate(&self) -> Result<Config, ConfigError> {
        if self.data_dir.trim().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let data_dir = PathBuf::from(&self.data_dir);
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            invalid("listen", format!("`{}` is not an address like 0.0.0.0:7443", self.listen))
        })?;
        for h in &self.hostnames {
            if h.trim().is_empty() || h.contains(char::is_whitespace) {
                return Err(invalid("hostnames", format!("`{h}` is not a host name")));
            }
        }
        let certs = data_dir.join("certs");
        let or_default = |s: &str, name: &str| {
            if s.is_empty() { certs.join(name) } else { PathBuf::from(s) }
        };
        let tls = TlsConfig {
            client_auth: self.tls.client_auth.parse().map_err(|m| invalid("tls.client_auth", m))?,
            client_ca: or_default(&self.tls.client_ca, "ca.pem"),
            cert: or_default(&self.tls.cert, "server.pem"),
            key: or_default(&self.tls.key, "server.key"),
            insecure_plaintext: self.tls.insecure_plaintext,
            bind_client_cert: self.tls.bind_client_cert,
        };
        if tls.bind_client_cert && tls.client_auth == ClientAuth::Off {
            return Err(invalid(
                "tls.bind_client_cert",
                "needs client certificates: set tls.client_auth to optional or required",
            ));
        }
        if tls.insecure_plaintext && tls.client_auth != ClientAuth::Off {
            return Err(invalid(
                "tls.client_auth",
                "client certificates need TLS; it cannot be combined with insecure_plaintext",
            ));
        }
        let a = &self.auth;
        let nonempty = |key: &str, v: &str| {
            if v.trim().is_empty() { Err(invalid(key, "must not be empty")) } else { Ok(()) }
        };
        nonempty("auth.issuer", &a.issuer)?;
        nonempty("auth.audience", &a.audience)?;
        let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(invalid(key, format!("{v} is outside {lo}..={hi}")))
            } else {
                Ok(())
            }
        };
        in_range("auth.access_ttl_secs", a.access_ttl_secs, 30, 24 * 3600)?;
        in_range("auth.refresh_ttl_secs", a.refresh_ttl_secs, 60, 365 * 24 * 3600)?;
        in_range("auth.login_free_failures", a.login_free_failures.into(), 1, 1000)?;
        in_range("auth.login_max_delay_secs", a.login_max_delay_secs, 1, 3600)?;
        in_range("auth.hash_workers", a.hash_workers as u64, 0, 64)?;
        in_range("auth.hash_queue", a.hash_queue as u64, 0, 100_000)?;
        let hash_workers = match a.hash_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let auth = AuthConfig {
            registration: a.registration.parse().map_err(|m| invalid("auth.registration", m))?,
            default_role: a.default_role.parse().map_err(|m| invalid("auth.default_role", m))?,
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            access_ttl: Duration::from_secs(a.access_ttl_secs),
            refresh_ttl: Duration::from_secs(a.refresh_ttl_secs),
            login_free_failures: a.login_free_failures,
            login_max_delay: Duration::from_secs(a.login_max_delay_secs),
            hash_workers,
            hash_queue: a.hash_queue,
            trusted_keys: a
                .trusted_keys
                .iter()
                .map(|f| {
                    if f.trim().is_empty() {
                        Err(invalid("auth.trusted_keys", "a file name is empty"))
                    } else {
                        Ok(data_dir.join(f))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let l = &self.limits;
        in_range("limits.max_concurrent_streams", l.max_concurrent_streams.into(), 1, 10_000)?;
        in_range("limits.keepalive_interval_secs", l.keepalive_interval_secs, 1, 3600)?;
        in_range("limits.keepalive_timeout_secs", l.keepalive_timeout_secs, 1, 600)?;
        in_range("limits.tls_handshake_timeout_secs", l.tls_handshake_timeout_secs, 1, 300)?;
        in_range("limits.max_header_bytes", l.max_header_bytes.into(), 1024, 1 << 20)?;
        in_range("limits.max_message_bytes", l.max_message_bytes as u64, 1024, 16 << 20)?;
        in_range("limits.max_text_bytes", l.max_text_bytes as u64, 1, 1 << 20)?;
        if l.max_text_bytes + 1024 > l.max_message_bytes {
            return Err(invalid(
                "limits.max_text_bytes",
                "must leave 1 KiB of room below limits.max_message_bytes",
            ));
        }
        in_range("limits.max_connections", l.max_connections as u64, 1, 1_000_000)?;
        if !(MIN_RATE..=MAX_RATE).contains(&l.send_rate_per_sec) {
            return Err(invalid(
                "limits.send_rate_per_sec",
                format!("{} is outside {MIN_RATE}..={MAX_RATE}", l.send_rate_per_sec),
            ));
        }
        in_range("limits.send_burst", l.send_burst.into(), 1, 100_000)?;
        in_range("limits.max_connections_per_ip", l.max_connections_per_ip as u64, 1, 1_000_000)?;
        in_range("limits.auth_timeout_secs", l.auth_timeout_secs, 1, 3600)?;
        in_range("limits.idle_connection_secs", l.idle_connection_secs, 1, 24 * 3600)?;
        if !(MIN_RATE..=MAX_RATE).contains(&l.action_rate_per_sec) {
            return Err(invalid(
                "limits.action_rate_per_sec",
                format!("{} is outside {MIN_RATE}..={MAX_RATE}", l.action_rate_per_sec),
            ));
        }
        in_range("limits.action_burst", l.action_burst.into(), 1, 100_000)?;
        if !(MIN_RATE..=MAX_RATE).contains(&l.search_rate_per_sec) {
            return Err(invalid(
                "limits.search_rate_per_sec",
                format!("{} is outside {MIN_RATE}..={MAX_RATE}", l.search_rate_per_sec),
            ));
        }
        in_range("limits.search_burst", l.search_burst.into(), 1, 100_000)?;
        in_range(
            "limits.max_subscriptions_per_stream",
            l.max_subscriptions_per_stream as u64,
            1,
            100_000,
        )?;
        in_range("limits.max_streams_per_user", l.max_streams_per_user as u64, 1, 10_000)?;
        in_range("limits.stuck_stream_timeout_secs", l.stuck_stream_timeout_secs, 1, 3600)?;
        in_range(
            "limits.max_notifications_per_user",
            l.max_notifications_per_user as u64,
            1,
            10_000_000,
        )?;
        in_range("limits.presence_grace_secs", l.presence_grace_secs, 0, 3600)?;
        in_range("limits.shutdown_drain_secs", l.shutdown_drain_secs, 0, 3600)?;
        in_range("limits.token_recheck_secs", l.token_recheck_secs, 1, 3600)?;
        let limits = Limits {
            max_concurrent_streams: l.max_concurrent_streams,
            keepalive_interval: Duration::from_secs(l.keepalive_interval_secs),
            keepalive_timeout: Duration::from_secs(l.keepalive_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(l.tls_handshake_timeout_secs),
            max_header_bytes: l.max_header_bytes,
            max_message_bytes: l.max_message_bytes,
            max_text_bytes: l.max_text_bytes,
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            auth_timeout: Duration::from_secs(l.auth_timeout_secs),
            idle_connection: Duration::from_secs(l.idle_connection_secs),
            send_rate_per_sec: l.send_rate_per_sec,
            send_burst: l.send_burst,
            action_rate_per_sec: l.action_rate_per_sec,
            action_burst: l.action_burst,
            search_rate_per_sec: l.search_rate_per_sec,
            search_burst: l.search_burst,
            max_subscriptions_per_stream: l.max_subscriptions_per_stream,
            max_streams_per_user: l.max_streams_per_user,
            stuck_stream_timeout: Duration::from_secs(l.stuck_stream_timeout_secs),
            max_notifications_per_user: l.max_notifications_per_user,
            presence_grace: Duration::from_secs(l.presence_grace_secs),
            shutdown_drain: Duration::from_secs(l.shutdown_drain_secs),
            token_recheck: Duration::from_secs(l.token_recheck_secs),
        };
        in_range("store.cache_mib", self.store.cache_mib as u64, 1, 64 * 1024)?;
        let b = &self.backup;
        in_range("backup.snapshot_interval_secs", b.snapshot_interval_secs, 0, 7 * 24 * 3600)?;
        // Two at least: a copy tool that listed the directory just before the oldest was
        // pruned still finds the newest.
        in_range("backup.keep", b.keep as u64, 2, 1000)?;
        let metrics_listen = match self.metrics.listen.trim() {
            "" => None,
            a => Some(a.parse().map_err(|_| {
                invalid("metrics.listen", format!("`{a}` is not an address like 127.0.0.1:9464"))
            })?),
        };
        let backup = BackupConfig {
            interval: (b.snapshot_interval_secs > 0)
                .then(|| Duration::from_secs(b.snapshot_interval_secs)),
            keep: b.keep,
        };
        let r = &self.retention;
        in_range("retention.max_age_days", r.max_age_days, 0, 100 * 365)?;
        if r.max_events_per_room != 0 {
            in_range(
                "retention.max_events_per_room",
                r.max_events_per_room,
                MIN_EVENTS_PER_ROOM,
                1 << 48,
            )?;
        }
        let retention = RetentionConfig {
            max_age: (r.max_age_days > 0).then(|| Duration::from_secs(r.max_age_days * 86_400)),
            max_events_per_room: (r.max_events_per_room > 0).then_some(r.max_events_per_room),
        };
        let a = &self.attachments;
        // 100 MiB at most: the chunk that completes a file hashes it and moves it in one write
        // transaction, which holds the writer for about 20 ms per 10 MiB (PERFORMANCE.md).
        in_range("attachments.max_bytes", a.max_bytes, 1, 100 << 20)?;
        in_range("attachments.per_user_bytes", a.per_user_bytes, a.max_bytes, 1 << 50)?;
        in_range("attachments.unposted_secs", a.unposted_secs, 60, 365 * 86_400)?;
        let attachments = AttachmentsConfig {
            max_bytes: a.max_bytes,
            per_user_bytes: a.per_user_bytes,
            unposted: Duration::from_secs(a.unposted_secs),
        };
        let q = &self.quic;
        in_range("quic.idle_timeout_secs", q.idle_timeout_secs, 5, 600)?;
        in_range("quic.keep_alive_interval_secs", q.keep_alive_interval_secs, 1, 300)?;
        if q.keep_alive_interval_secs >= q.idle_timeout_secs {
            return Err(invalid(
                "quic.keep_alive_interval_secs",
                "must be below quic.idle_timeout_secs, or idle connections drop",
            ));
        }
        in_range("quic.max_streams", q.max_streams.into(), 1, 10_000)?;
        in_range("quic.stream_receive_window_kib", q.stream_receive_window_kib.into(), 16, 65_536)?;
        in_range("quic.receive_window_kib", q.receive_window_kib.into(), 64, 1_048_576)?;
        in_range("quic.retry_above_handshakes", q.retry_above_handshakes as u64, 0, 1_000_000)?;
        let quic = (q.enabled && !self.tls.insecure_plaintext).then(|| QuicLimits {
            max_bidi_streams: q.max_streams,
            stream_receive_window: q.stream_receive_window_kib * 1024,
            receive_window: q.receive_window_kib * 1024,
            idle_timeout: Duration::from_secs(q.idle_timeout_secs),
            keep_alive: Duration::from_secs(q.keep_alive_interval_secs),
            handshake_timeout: Duration::from_secs(self.limits.tls_handshake_timeout_secs),
            retry_above_handshakes: q.retry_above_handshakes,
            max_header_bytes: self.limits.max_header_bytes.into(),
            max_connections: self.limits.max_connections,
            ..QuicLimits::default()
        });
        Ok(Config {
            data_dir,
            listen,
            hostnames: self.hostnames.clone(),
            tls,
            auth,
            members_may_create_private: self.rooms.members_may_create_private,
            limits,
            store_cache_bytes: self.store.cache_mib << 20,
            quic,
            backup,
            retention,
            attachments,
            metrics_listen,
            cluster: self.cluster.validate()?,
        })
    }
}

impl RawCluster {
    fn validate(&self) -> Result<Option<ClusterConfig>, ConfigError> {
        let in_range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(invalid(key, format!("{v} is outside {lo}..={hi}")))
            } else {
                Ok(())
            }
        };
        let mut urls = Vec::new();
        for part in self.nats_urls.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let url =
                if part.contains("://") { part.to_string() } else { format!("nats://{part}") };
            match url.split_once("://") {
                Some(("nats" | "tls", hostport))
                    if hostport.rsplit_once(':').is_some_and(|(h, p)| {
                        !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0)
                    }) => {}
                _ => {
                    return Err(invalid(
                        "cluster.nats_urls",
                        format!("`{part}` is not a NATS server like nats://HOST:4222"),
                    ));
                }
            }
            urls.push(url);
        }
        if urls.is_empty() {
            return Ok(None);
        }
        in_range("cluster.replicas", self.replicas as u64, 1, 5)?;
        in_range("cluster.connect_wait_secs", self.connect_wait_secs, 0, 3600)?;
        let path = |p: &str| (!p.trim().is_empty()).then(|| PathBuf::from(p.trim()));
        let client_cert = match (path(&self.client_cert), path(&self.client_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "cluster.client_cert",
                    "client_cert and client_key go together",
                ));
            }
        };
        Ok(Some(ClusterConfig {
            nats_urls: urls,
            replicas: self.replicas,
            connect_wait: Duration::from_secs(self.connect_wait_secs),
            credentials: path(&self.credentials),
            ca: path(&self.ca),
            client_cert,
            node_name: match self.node_name.trim() {
                "" => "edgechat".into(),
                n => n.to_string(),
            },
        }))
    }
}

/// Replaces every leaf of `tree` whose environment name is in `vars`.
fn override_leaves(
    tree: &mut toml::Value,
    prefix: &str,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    let toml::Value::Table(table) = tree else {
        return Ok(());
    };
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let toml::Value::Table(_) = value {
            override_leaves(value, &path, vars)?;
            continue;
        }
        let env_name = format!("EDGECHAT_{}", path.replace('.', "_").to_uppercase());
        let Some((_, raw)) = vars.iter().find(|(k, _)| *k == env_name) else {
            continue;
        };
        let bad = |what: &str| invalid(&path, format!("{env_name}=`{raw}` is not {what}"));
        *value = match value {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Boolean(_) => match raw.as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => return Err(bad("a boolean (true/false)")),
            },
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.parse().map_err(|_| bad("an integer"))?)
            }
            toml::Value::Float(_) => toml::Value::Float(raw.parse().map_err(|_| bad("a number"))?),
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            _ => continue,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:7443");
        assert_eq!(c.tls.client_auth, ClientAuth::Off);
        assert_eq!(c.auth.registration, Registration::Open);
        assert_eq!(c.auth.access_ttl, Duration::from_secs(900));
        assert_eq!(c.limits.max_message_bytes, 64 * 1024);
        assert_eq!(c.tls.client_ca, PathBuf::from("./data/certs/ca.pem"));
    }

    #[test]
    fn the_example_config_parses_and_equals_the_defaults() {
        let text = include_str!("../config/edgechat.example.toml");
        let parsed = RawConfig::from_toml(text).unwrap();
        assert_eq!(
            toml::Value::try_from(&parsed).unwrap(),
            toml::Value::try_from(RawConfig::default()).unwrap()
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let e = RawConfig::from_toml("listne = \"x\"").unwrap_err();
        assert!(e.contains("listne"), "{e}");
        let e = RawConfig::from_toml("[limits]\nsend_burst = \"many\"").unwrap_err();
        assert!(e.contains("send_burst"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut raw = RawConfig::default();
        raw.tls.client_auth = "sometimes".into();
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("tls.client_auth") && e.contains("sometimes"), "{e}");
        let raw = RawConfig { listen: "nowhere".into(), ..RawConfig::default() };
        assert!(raw.validate().unwrap_err().to_string().contains("`listen`"));
        let mut raw = RawConfig::default();
        raw.auth.access_ttl_secs = 0;
        assert!(raw.validate().unwrap_err().to_string().contains("auth.access_ttl_secs"));
        let mut raw = RawConfig::default();
        raw.limits.send_rate_per_sec = -1.0;
        assert!(raw.validate().unwrap_err().to_string().contains("limits.send_rate_per_sec"));
        // Attachments: a file too large for one transaction, a quota below one file, a
        // collection delay too short for an upload to finish in.
        type Set = fn(&mut RawAttachments);
        let bad: [(&str, Set); 3] = [
            ("attachments.max_bytes", |a| a.max_bytes = (100 << 20) + 1),
            ("attachments.per_user_bytes", |a| a.per_user_bytes = a.max_bytes - 1),
            ("attachments.unposted_secs", |a| a.unposted_secs = 59),
        ];
        for (key, set) in bad {
            let mut raw = RawConfig::default();
            set(&mut raw.attachments);
            let e = raw.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn quic_and_binding_rules_name_the_key() {
        let mut raw = RawConfig::default();
        raw.quic.keep_alive_interval_secs = 30;
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("quic.keep_alive_interval_secs") && e.contains("below"), "{e}");
        let mut raw = RawConfig::default();
        raw.quic.idle_timeout_secs = 1;
        assert!(raw.validate().unwrap_err().to_string().contains("quic.idle_timeout_secs"));
        let mut raw = RawConfig::default();
        raw.tls.bind_client_cert = true;
        let e = raw.validate().unwrap_err().to_string();
        assert!(e.contains("tls.bind_client_cert"), "{e}");
        raw.tls.client_auth = "optional".into();
        assert!(raw.validate().is_ok());
        // HTTP/3 needs TLS: off behind --insecure-plaintext.
        let mut raw = RawConfig::default();
        raw.tls.insecure_plaintext = true;
        assert!(raw.validate().unwrap().quic.is_none());
        assert!(RawConfig::default().validate().unwrap().quic.is_some());
    }

    /// Every number in the config set to extreme values: validation never panics, refuses
    /// with the key's name, and what it accepts does not panic at run time either (the send
    /// limiter, which once panicked on a rate of 1e-20).
    #[test]
    fn extreme_values_are_refused_naming_the_key_or_work() {
        let base = toml::Value::try_from(RawConfig::default()).unwrap();
        let mut leaves = Vec::new();
        fn collect(v: &toml::Value, path: String, out: &mut Vec<(String, toml::Value)>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    collect(v, p, out);
                }
            } else {
                out.push((path, v.clone()));
            }
        }
        collect(&base, String::new(), &mut leaves);
        let ints = [0, 1, -1, i64::MAX, i64::MIN, u32::MAX as i64 + 1];
        let floats = [0.0, -1.0, 1e-20, 1e-300, 1e308, f64::NAN, f64::INFINITY, 5e-324];
        let mut tried = 0;
        for (key, value) in &leaves {
            let extremes: Vec<toml::Value> = match value {
                toml::Value::Integer(_) => ints.iter().map(|&i| toml::Value::Integer(i)).collect(),
                toml::Value::Float(_) => floats.iter().map(|&f| toml::Value::Float(f)).collect(),
                _ => continue,
            };
            for x in extremes {
                tried += 1;
                let mut tree = base.clone();
                let mut at = &mut tree;
                let parts: Vec<&str> = key.split('.').collect();
                for p in &parts[..parts.len() - 1] {
                    at = at.get_mut(*p).unwrap();
                }
                at.as_table_mut().unwrap().insert(parts[parts.len() - 1].into(), x.clone());
                let leaf = parts[parts.len() - 1];
                let raw: RawConfig = match tree.try_into() {
                    Ok(raw) => raw,
                    Err(e) => {
                        // The type refused it (negative into unsigned, too large): the
                        // parser's message names the key.
                        let e: toml::de::Error = e;
                        assert!(e.to_string().contains(leaf), "{key}={x}: {e}");
                        continue;
                    }
                };
                match raw.validate() {
                    Err(e) => assert!(e.to_string().contains(key.as_str()), "{key}={x}: {e}"),
                    Ok(c) => {
                        let mut limiter = crate::chat::ratelimit::RateLimiter::new(
                            c.limits.send_rate_per_sec,
                            c.limits.send_burst,
                        );
                        for t in 0..(c.limits.send_burst as i64 + 2).min(10_000) {
                            let _ = limiter.take("u", t);
                        }
                        limiter.forget_idle(i64::MAX / 2);
                    }
                }
            }
        }
        assert!(tried > 100, "only {tried} values tried");
    }

    #[test]
    fn environment_overrides_file_values() {
        let raw =
            RawConfig::from_toml("listen = \"127.0.0.1:1\"\n[tls]\nclient_auth = \"optional\"")
                .unwrap()
                .apply_env(env(&[
                    ("EDGECHAT_LISTEN", "127.0.0.1:2"),
                    ("EDGECHAT_LIMITS_SEND_BURST", "7"),
                    ("EDGECHAT_TLS_INSECURE_PLAINTEXT", "true"),
                    ("EDGECHAT_TLS_CLIENT_AUTH", "off"),
                    ("EDGECHAT_HOSTNAMES", "a.example, b.example"),
                    ("EDGECHAT_PROFILE", "not a config key"),
                ]))
                .unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:2");
        assert_eq!(c.limits.send_burst, 7);
        assert!(c.tls.insecure_plaintext);
        assert_eq!(c.hostnames, vec!["a.example", "b.example"]);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let e = RawConfig::default()
            .apply_env(env(&[("EDGECHAT_LIMITS_SEND_BURST", "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EDGECHAT_LIMITS_SEND_BURST") && e.contains("limits.send_burst"), "{e}");
    }
}
