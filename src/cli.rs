//! The command line: `serve`, `init`, `user add`, `keys rotate`, `certs issue-client`,
//! `backup`, `check`, `bench`, and the terminal client's `login`, `logout`, `profiles`,
//! `send`, `tail`, `rooms`, `history` (in `term`).
//! Errors are printed with what to do about them; the exit status is non-zero on failure.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{CONFIG_FILE_NAME, Config, RawConfig, Role};

/// edgechat: a real-time chat server in one binary (gRPC over HTTP/2 + TLS and HTTP/3).
#[derive(Parser, Debug)]
#[command(name = "edgechat", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the chat API; initialises the data directory on first start.
    Serve(ServeArgs),
    /// Create a data directory: config, signing key, development CA and certificates, database.
    Init(InitArgs),
    /// Manage users while the server is stopped.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue certificates from the data directory's CA.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Write a consistent copy of the database to FILE: from a running server (--server, as an
    /// admin; the server keeps serving) or, with the server stopped, from DIR.
    Backup(BackupArgs),
    /// Check a database (DIR's with the server stopped, or a backup --file): schema, gapless
    /// seqs per room, counts. Exits non-zero naming what is damaged.
    Check {
        #[command(flatten)]
        data: DataDirArg,
        /// A database file to check instead of DIR's.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Also print where the file's bytes go, table by table.
        #[arg(long)]
        sizes: bool,
    },
    /// Put a snapshot in place of DIR's database (server stopped): the newest good one in
    /// DIR/snapshots, or --from FILE (a backup). The replaced file is kept beside it.
    Restore {
        #[command(flatten)]
        data: DataDirArg,
        /// A database file to restore instead of the newest snapshot.
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
    },
    /// Rewrite DIR's database without its free space (server stopped): a snapshot of it,
    /// checked, renamed into place. Run it after lowering retention or after an upgrade.
    Compact {
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Ask a running server's standard health service whether it is SERVING (exit 0) or not
    /// (exit 1): for container HEALTHCHECKs and Kubernetes exec probes (kubelet's own gRPC
    /// probes cannot do TLS).
    Health {
        /// The server [default: https://localhost:7443].
        #[arg(long, value_name = "URL", default_value = "https://localhost:7443")]
        server: String,
        /// CA of the server's certificate [default: DIR/certs/ca.pem].
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// A service name to ask about [default: the whole server].
        #[arg(long, value_name = "NAME", default_value = "")]
        service: String,
        #[command(flatten)]
        cert: ClientCertArgs,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Load generator: run a scenario against a server it starts (or --server URL).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Log in to a server (or --register) and save the session in a profile.
    Login(crate::term::LoginArgs),
    /// End the profile's session on the server and forget it.
    Logout(crate::term::LogoutArgs),
    /// List the saved profiles (* marks the one in use).
    Profiles,
    /// Send one message (the arguments, or standard input); prints its seq once stored.
    Send(crate::term::SendArgs),
    /// Print a room's events as they come, one per line; reconnects and resumes by itself.
    Tail(crate::term::TailArgs),
    /// List your rooms and the public ones, with unread and mention counts.
    Rooms(crate::term::RoomsArgs),
    /// Print a room's newest events.
    History(crate::term::HistoryArgs),
    /// Chat interactively in the terminal (rooms, messages, members; /help inside).
    Chat(crate::term::chat::ChatArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// A burst of registrations and logins: hashes/s and the server's RSS before, at peak and
    /// after.
    Login(crate::bench::login::LoginArgs),
    /// Senders sending as fast as acks come back: msgs/s, ack latency, database bytes per
    /// message.
    Durable(crate::bench::durable::DurableArgs),
    /// One room, N subscribers on their own connections, P publishers at R msg/s:
    /// deliveries/s, end-to-end latency, gaps.
    Fanout(crate::bench::fanout::FanoutArgs),
    /// A team server: M rooms of K members drawn from U users, everyone chatting at a low
    /// rate: latency, gaps, and the share of a core the server uses.
    Rooms(crate::bench::rooms::RoomsArgs),
    /// C idle connections, each with a subscribed Connect stream: server RSS per connection.
    Idle(crate::bench::idle::IdleArgs),
    /// N clients miss E events each, then reconnect at once: time until all are caught up.
    Resume(crate::bench::resume::ResumeArgs),
    /// Loads a corpus (benches/search/corpus.py) and times Search over it: load rate,
    /// database size, query latency per query for a user in every room and one in a few.
    Search(crate::bench::search::SearchArgs),
    /// Uploads files of one size and downloads them back: MiB/s each way, the last chunk's
    /// latency, database bytes per byte stored, server CPU and memory.
    Attachments(crate::bench::files::FilesArgs),
}

#[derive(Args, Debug)]
struct DataDirArg {
    /// Data directory (keys, certificates, database) [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// TCP (and UDP) address to serve on [default: 0.0.0.0:7443].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Config file [default: DIR/edgechat.toml if it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Client certificates: off, optional or required [default: off].
    #[arg(long, value_name = "MODE")]
    client_auth: Option<String>,
    /// Registration: open, closed or invite [default: open].
    #[arg(long, value_name = "MODE")]
    registration: Option<String>,
    /// Serve plain-text HTTP/2 (h2c), for running behind a TLS-terminating proxy.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Extra host name for the generated server certificate (repeatable).
    #[arg(long = "hostname", value_name = "NAME")]
    hostnames: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Run as a node of a cluster on these NATS servers (nats://HOST:PORT,...; docs/cluster.md)
    /// [default: single node].
    #[arg(long, value_name = "URLS")]
    cluster: Option<String>,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// Where to write the copy (a new file; written whole or not at all).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// A running server (https://host:port or h3://host:port) to back up online.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// CA of the server's certificate [default: DIR/certs/ca.pem].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Admin user to log in as (the password is read from standard input).
    #[arg(long, value_name = "NAME", requires = "server")]
    user: Option<String>,
    #[command(flatten)]
    cert: ClientCertArgs,
    #[command(flatten)]
    data: DataDirArg,
}

/// A client certificate for a server with `[tls] client_auth = "required"`.
#[derive(Args, Debug)]
struct ClientCertArgs {
    /// Client certificate (PEM), for servers that require one, e.g. DIR/certs/client.pem.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientCertArgs {
    fn pair(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.cert.clone()?, self.key.clone()?))
    }
}

#[derive(Args, Debug)]
struct InitArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Extra host name for the server certificate (repeatable).
    #[arg(long = "hostname", value_name = "NAME")]
    hostnames: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user (works while the server is stopped; the first admin is made this way).
    Add {
        /// Username (folded to lowercase; 3-32 of a-z 0-9 _ . -).
        name: String,
        /// Global role.
        #[arg(long, value_name = "ROLE", value_parser = ["guest", "member", "admin"])]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Display name [default: the username].
        #[arg(long, default_value = "")]
        display_name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Add a new signing key; old keys stay trusted until their files are removed. Restart the
    /// server to start signing with it.
    Rotate {
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Print the public keys tokens are verified with (DIR's keys and `[auth] trusted_keys`)
    /// as a JWKS document, for services that verify edgechat's tokens.
    Jwks {
        #[command(flatten)]
        data: DataDirArg,
        /// Config file (for `[auth] trusted_keys`) [default: DIR/edgechat.toml if it exists].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Issue a client certificate whose subject name is NAME (a username, for
    /// `bind_client_cert`), into DIR/certs/clients/NAME.pem and NAME.key.
    IssueClient {
        /// The certificate's subject common name.
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // The client commands speak for themselves; only their warnings are logged.
    let client = matches!(
        cli.command,
        Command::Login(_)
            | Command::Logout(_)
            | Command::Profiles
            | Command::Send(_)
            | Command::Tail(_)
            | Command::Rooms(_)
            | Command::History(_)
    );
    // `chat` owns the screen: a log line on stderr would tear it, so it logs nothing.
    if !matches!(cli.command, Command::Chat(_)) {
        init_tracing(if client { "warn" } else { "info" });
    }
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgechat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald, log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn data_dir(arg: &DataDirArg) -> PathBuf {
    arg.data_dir
        .clone()
        .or_else(|| std::env::var_os("EDGECHAT_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("./data"))
}

/// Resolves the configuration: file (explicit, else `DIR/edgechat.toml` if present), then
/// `EDGECHAT_*` variables, then flags; validated.
fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let dir = data_dir(&args.data);
    let file = args.config.clone().or_else(|| {
        let p = dir.join(CONFIG_FILE_NAME);
        p.exists().then_some(p)
    });
    let raw = match &file {
        Some(f) => RawConfig::from_file(f)?,
        None => RawConfig::default(),
    };
    let mut raw = raw.apply_env(std::env::vars())?;
    if let Some(d) = &args.data.data_dir {
        raw.data_dir = d.to_string_lossy().into_owned();
    } else if file.is_some() && args.config.is_none() {
        // The file lives in the data directory; that directory is the data directory.
        raw.data_dir = dir.to_string_lossy().into_owned();
    }
    if let Some(l) = &args.listen {
        raw.listen = l.clone();
    }
    if let Some(m) = &args.client_auth {
        raw.tls.client_auth = m.clone();
    }
    if let Some(r) = &args.registration {
        raw.auth.registration = r.clone();
    }
    if args.insecure_plaintext {
        raw.tls.insecure_plaintext = true;
    }
    if let Some(m) = &args.metrics_listen {
        raw.metrics.listen = m.clone();
    }
    if let Some(c) = &args.cluster {
        raw.cluster.nats_urls = c.clone();
    }
    raw.hostnames.extend(args.hostnames.iter().cloned());
    Ok(raw.validate()?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&args)?;
            pin_mmap_threshold();
            runtime()?.block_on(serve(config))
        }
        Command::Init(args) => {
            let dir = data_dir(&args.data);
            let report = crate::init::init_data_dir(&dir, &args.hostnames, crate::clock::now_ms())?;
            if report.created.is_empty() {
                println!("{} is already initialised; nothing changed", dir.display());
            }
            for p in report.created {
                println!("created {}", p.display());
            }
            Ok(())
        }
        Command::User(UserCommand::Add { name, role, password_stdin: _, display_name, data }) => {
            let dir = data_dir(&data);
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let password = read_password_line()?;
            runtime()?.block_on(user_add(&dir, &name, &password, &display_name, role))
        }
        Command::Keys(KeysCommand::Rotate { data }) => {
            let keys = data_dir(&data).join("keys");
            let kid = crate::auth::keys::generate_key(&keys, crate::clock::now_ms())?;
            println!(
                "new signing key {kid} in {}; restart the server to sign with it",
                keys.display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Jwks { data, config }) => {
            let dir = data_dir(&data);
            let mut ring = crate::auth::keys::Keyring::load(&dir.join("keys"))?;
            // The trusted keys as `serve` would read them: file, then `EDGECHAT_*` variables.
            let config = config.or_else(|| Some(dir.join("edgechat.toml")).filter(|p| p.exists()));
            let raw = match config {
                Some(file) => RawConfig::from_file(&file)?,
                None => RawConfig::default(),
            };
            let mut raw = raw.apply_env(std::env::vars())?;
            raw.data_dir = dir.to_string_lossy().into_owned();
            ring.trust(&raw.validate()?.auth.trusted_keys)?;
            println!("{}", serde_json::to_string_pretty(&ring.jwks())?);
            Ok(())
        }
        Command::Backup(args) => runtime()?.block_on(backup(args)),
        Command::Health { server, ca, service, cert, data } => {
            let ca = ca.unwrap_or_else(|| data_dir(&data).join("certs/ca.pem"));
            let status = runtime()?.block_on(async {
                let tls = crate::client::TlsFiles { ca: Some(ca), client_cert: cert.pair() };
                let ch = crate::client::connect(&server, &tls).await?;
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
                let req = tonic_health::pb::HealthCheckRequest { service: service.clone() };
                let timeout = std::time::Duration::from_secs(5);
                let answer = tokio::time::timeout(timeout, health.check(req)).await;
                let answer = answer.map_err(|_| anyhow::anyhow!("no answer within 5 s"))??;
                anyhow::Ok(answer.into_inner().status())
            })?;
            let name = status.as_str_name();
            println!("{name}");
            if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
                bail!("{server} is {name}");
            }
            Ok(())
        }
        Command::Restore { data, from } => {
            let dir = data_dir(&data);
            let r = crate::store::snapshot::restore(&dir, from.as_deref(), crate::clock::now_ms())?;
            println!(
                "restored {} ({} rooms, {} events) as {}",
                r.from.display(),
                r.report.rooms,
                r.report.events,
                dir.join(crate::store::DB_FILE_NAME).display()
            );
            if let Some(old) = r.replaced {
                println!("the database it replaced is kept as {}", old.display());
            }
            Ok(())
        }
        Command::Compact { data } => {
            let c = crate::store::snapshot::compact(&data_dir(&data))?;
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            println!(
                "compacted: {:.1} MiB -> {:.1} MiB ({} rooms, {} events)",
                mib(c.before_bytes),
                mib(c.after_bytes),
                c.report.rooms,
                c.report.events
            );
            Ok(())
        }
        Command::Check { data, file, sizes } => {
            let path = file.unwrap_or_else(|| data_dir(&data).join(crate::store::DB_FILE_NAME));
            if !path.exists() {
                bail!("{} does not exist", path.display());
            }
            let store = crate::store::Store::open(&path, 16 << 20)?;
            let r = store.check()?;
            println!(
                "{}: schema {}, {} users, {} rooms, {} events",
                path.display(),
                r.schema_version,
                r.users,
                r.rooms,
                r.events
            );
            if sizes {
                let len = std::fs::metadata(&path)?.len();
                print!("{}", size_table(&store.sizes(len)?, r.events));
            }
            if r.problems.is_empty() {
                println!("ok");
                return Ok(());
            }
            for p in &r.problems {
                eprintln!("damaged: {p}");
            }
            bail!("{} is damaged ({} problems)", path.display(), r.problems.len())
        }
        Command::Bench(BenchCommand::Login(args)) => {
            bench(args.target.json, crate::bench::login::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Resume(args)) => {
            bench(args.target.json, crate::bench::resume::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Idle(args)) => {
            bench(args.target.json, crate::bench::idle::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Fanout(args)) => {
            bench(args.target.json, crate::bench::fanout::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Rooms(args)) => {
            bench(args.target.json, crate::bench::rooms::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Search(args)) => {
            bench(args.target.json, crate::bench::search::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Attachments(args)) => {
            bench(args.target.json, crate::bench::files::run(&args), |r| r.table())
        }
        Command::Bench(BenchCommand::Durable(args)) => {
            bench(args.target.json, crate::bench::durable::run(&args), |r| r.table())
        }
        Command::Login(args) => runtime()?.block_on(crate::term::login(args)),
        Command::Logout(args) => runtime()?.block_on(crate::term::logout(args)),
        Command::Profiles => crate::term::profiles(),
        Command::Send(args) => runtime()?.block_on(crate::term::send(args)),
        Command::Tail(args) => runtime()?.block_on(crate::term::tail(args)),
        Command::Rooms(args) => runtime()?.block_on(crate::term::rooms(args)),
        Command::History(args) => runtime()?.block_on(crate::term::history(args)),
        Command::Chat(args) => runtime()?.block_on(crate::term::chat::chat(args)),
        Command::Certs(CertsCommand::IssueClient { name, data }) => {
            let name = crate::auth::password::normalize_username(&name)?;
            let (pem, key) = crate::init::issue_client_cert(&data_dir(&data), &name)?;
            println!("created {}\ncreated {}", pem.display(), key.display());
            Ok(())
        }
    }
}

pub(crate) fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        bail!("no password on standard input (pipe it in: `echo PASSWORD | edgechat ...`)");
    }
    Ok(pw.to_string())
}

async fn user_add(
    dir: &Path,
    name: &str,
    password: &str,
    display: &str,
    role: Role,
) -> anyhow::Result<()> {
    let report = crate::init::init_data_dir(dir, &[], crate::clock::now_ms())?;
    for p in report.created {
        eprintln!("created {}", p.display());
    }
    let config = RawConfig { data_dir: dir.to_string_lossy().into_owned(), ..RawConfig::default() }
        .validate()?;
    let keys = crate::auth::keys::Keyring::load(&dir.join("keys"))?;
    let store = crate::store::Store::open(&dir.join(crate::store::DB_FILE_NAME), 1 << 20)?;
    let writer = store.start_writer(Box::new(|_| {}));
    let accounts =
        crate::auth::Accounts::new(config.auth, keys, store, crate::change::Exec::local(writer));
    let user = accounts.create_user(name, password, display, role, crate::clock::now_ms()).await?;
    println!(
        "created user {} ({}) with id {}",
        user.username,
        crate::auth::accounts::role_name(role),
        user.id
    );
    Ok(())
}

/// `edgechat backup`: online through `AdminService.Backup`, or offline from the data directory.
async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    if args.out.exists() {
        bail!("{} exists; choose a new file", args.out.display());
    }
    let dir = data_dir(&args.data);
    let Some(url) = &args.server else {
        let store = crate::store::Store::open(&dir.join(crate::store::DB_FILE_NAME), 16 << 20)?;
        let info = store.snapshot_to(&args.out)?;
        println!("wrote {} ({} events)", args.out.display(), info.events);
        return Ok(());
    };
    let Some(user) = &args.user else {
        bail!("an online backup needs --user NAME (an admin; password on standard input)");
    };
    let password = read_password_line()?;
    let ca = args.ca.clone().unwrap_or_else(|| dir.join("certs/ca.pem"));
    let tls = crate::client::TlsFiles { ca: Some(ca), client_cert: args.cert.pair() };
    let ch = crate::client::connect(url, &tls).await?;
    let login = crate::proto::LoginRequest { username: user.clone(), password };
    let token = crate::client::auth_client(ch.clone(), None).login(login).await?.into_inner();
    let mut admin = crate::client::admin_client(ch, Some(&token.access_token));
    let mut chunks = admin.backup(crate::proto::BackupRequest {}).await?.into_inner();
    let temp = crate::files::temp_path(&args.out);
    let written = async {
        use tokio::io::AsyncWriteExt;
        let mut f = tokio::fs::File::create(&temp).await?;
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.message().await? {
            f.write_all(&chunk.data).await?;
            bytes += chunk.data.len() as u64;
        }
        f.sync_all().await?;
        crate::files::publish(&temp, &args.out)?;
        anyhow::Ok(bytes)
    }
    .await;
    match written {
        Ok(bytes) => {
            println!("wrote {} ({bytes} bytes)", args.out.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// Keeps glibc's malloc giving buffers of 128 KiB and more their own mappings, returned to the
/// system when freed. By default glibc raises that threshold after the first such buffer is
/// freed, and from then on the 256 KiB chunks of uploads and downloads come from its arenas,
/// where freed ones stay resident: a server that had taken 20 files of 10 MiB kept 190 MiB of
/// RSS instead of 105 MiB (docs/PERFORMANCE.md, "Attachments"). Other allocators and
/// platforms need nothing.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = crate::server::start(config).await?;
    // One machine-readable line on stdout (scripts and tests read the port from it when
    // listening on port 0); everything else goes to the log on stderr.
    println!("edgechat listening on {}", running.addr);
    let token = running.shutdown_token();
    // Listening from now on: a signal is never missed between the first and the second.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down; a second SIGINT/SIGTERM exits at once");
        token.cancel();
        signals.next().await;
        // Everything acknowledged is already on disk; the database is repaired on next start.
        eprintln!("edgechat: second signal, exiting without draining");
        std::process::exit(130);
    });
    running.wait().await?;
    Ok(())
}

/// SIGINT and SIGTERM, listened to from creation on (tokio's listeners see only signals
/// that arrive after they exist, so they are made once, not per wait).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = one(&mut self.term) => {}
                () = one(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `check --sizes`: the file, then each table, with bytes per room event.
fn size_table(s: &crate::store::SizeReport, events: u64) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per = |b: u64| b.checked_div(events).unwrap_or(0);
    let mut out = format!(
        "file {:.1} MiB ({} bytes per event): {:.1} MiB in pages, {:.1} MiB free or unused\n\
         {:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        mib(s.file_bytes),
        per(s.file_bytes),
        mib(s.allocated_bytes),
        mib(s.fragmented_bytes),
        "table",
        "rows",
        "pages MiB",
        "data MiB",
        "meta MiB",
        "unused MiB",
        "B/event"
    );
    for t in &s.tables {
        out.push_str(&format!(
            "{:<20} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>9}\n",
            if t.tables > 1 { format!("{} ({})", t.name, t.tables) } else { t.name.clone() },
            t.entries,
            mib(t.page_bytes),
            mib(t.stored_bytes),
            mib(t.metadata_bytes),
            mib(t.fragmented_bytes),
            per(t.page_bytes)
        ));
    }
    out
}

/// Runs a bench scenario and prints its report. Ctrl-C (or the server going away) stops the
/// load: the scenario reports what it measured so far, marked partial, and the command fails;
/// a scenario still setting up gets 10 s to notice before it is dropped (which stops a server
/// it started). A second Ctrl-C exits at once.
fn bench<R: serde::Serialize>(
    json: bool,
    run: impl std::future::Future<Output = Result<R, crate::bench::BenchError>>,
    table: impl Fn(&R) -> String,
) -> anyhow::Result<()> {
    let stop = crate::bench::stop();
    let report = runtime()?.block_on(async {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                crate::bench::stop().stop("interrupted (Ctrl-C)");
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let grace = async {
            stop.stopped().await;
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        };
        tokio::select! {
            r = run => r,
            () = grace => Err(crate::bench::BenchError::Server("no figures yet".into())),
        }
    });
    let report = match (report, stop.reason()) {
        (Ok(r), _) => r,
        (Err(e), Some(why)) => {
            bail!("stopped early ({why}) before there was anything to report ({e})")
        }
        (Err(e), None) => return Err(e.into()),
    };
    print_report(json, &report, table(&report))?;
    if let Some(why) = stop.reason() {
        bail!("stopped early: {why}; the figures above are partial");
    }
    Ok(())
}

/// A bench report: one JSON object with `--json`, else its table.
fn print_report(json: bool, report: &impl serde::Serialize, table: String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{table}");
    }
    Ok(())
}
