//! Real nats-server processes for the cluster tests (no mock of NATS anywhere): a cluster of
//! one or three JetStream servers on loopback with `sync_interval: always`, each in its own
//! temporary store directory, with kill -9, SIGSTOP and restart. The binary comes from
//! `$EDGECHAT_NATS_SERVER` or `.ci/nats-server` (target/tools/nats-server/bin); without it
//! the cluster tests say so and pass, unless `EDGECHAT_REQUIRE_NATS` is set (as `.ci/run`
//! does), which makes a missing binary a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nats-server binary, or `None` (after saying why) when the cluster tests must skip.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("EDGECHAT_NATS_SERVER").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/nats-server/bin/nats-server")
    });
    if path.is_file() {
        return Some(path);
    }
    let why = format!("no nats-server at {} (run .ci/nats-server)", path.display());
    if std::env::var_os("EDGECHAT_REQUIRE_NATS").is_some() {
        panic!("{why}; EDGECHAT_REQUIRE_NATS is set");
    }
    eprintln!("skipped: {why}");
    None
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One server of the cluster.
pub struct Server {
    pub name: String,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn start(&mut self, bin: &PathBuf) {
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            self.signal_child(&c, libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal_child(&self, c: &Child, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, sig) };
    }

    /// SIGSTOP now and SIGCONT after `d`, from a thread (a paused process: its sockets stay
    /// open, nothing answers). Join the handle to know it runs again.
    pub fn pause_for(&mut self, d: Duration) -> std::thread::JoinHandle<()> {
        let pid = self.child.as_ref().map(|c| c.id() as i32);
        if let Some(c) = &self.child {
            self.signal_child(c, libc::SIGSTOP);
        }
        std::thread::spawn(move || {
            std::thread::sleep(d);
            if let Some(pid) = pid {
                // SAFETY: kill(2) on our own child's pid (reaped only by `kill`, which
                // sends SIGCONT first).
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        })
    }
}

/// Servers that are stopped when dropped.
pub struct Cluster {
    bin: PathBuf,
    pub servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` servers (1 or 3), JetStream on, `sync_interval: always`, routes between them.
    pub fn start(n: usize) -> Option<Cluster> {
        let bin = binary()?;
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for i in 0..n {
            let name = format!("n{}", i + 1);
            let port = free_port();
            let store = dir.path().join(&name);
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: always }}\n",
                store.display()
            );
            if n > 1 {
                let list: Vec<String> =
                    routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
                conf.push_str(&format!(
                    "cluster {{ name: ec, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                    routes[i],
                    list.join(", ")
                ));
            }
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(&config, conf).unwrap();
            servers.push(Server { name, port, config, child: None });
        }
        for s in &mut servers {
            s.start(&bin);
        }
        let c = Cluster { bin, servers, _dir: dir };
        for s in &c.servers {
            c.wait_listening(s.port);
        }
        Some(c)
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server on port {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every server's URL, comma-separated (as `--cluster` takes them).
    pub fn urls(&self) -> String {
        self.servers.iter().map(Server::url).collect::<Vec<_>>().join(",")
    }

    /// The server named `name`.
    pub fn server(&mut self, name: &str) -> &mut Server {
        self.servers.iter_mut().find(|s| s.name == name).expect("a server of the cluster")
    }

    /// Starts a killed server again on its port and store.
    pub fn restart(&mut self, name: &str) {
        let bin = self.bin.clone();
        let s = self.server(name);
        s.kill();
        s.start(&bin);
        let port = s.port;
        self.wait_listening(port);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }
}
