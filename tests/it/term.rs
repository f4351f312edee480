//! The terminal client as its users run it: `edgechat login`, `send`, `tail`, `rooms`,
//! `history`, `logout` and `profiles` as processes against a real `edgechat serve`, with a
//! private config directory per test (`EDGECHAT_CONFIG_DIR`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use edgechat::proto;

use crate::support::{
    Served, User, WAIT, binary_channel, create_room, edgechat_bin, serve_binary, serve_binary_at,
};

/// A user's machine: a config directory, and a working directory without `./data`.
struct Desk {
    home: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        Desk { home: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = edgechat_bin();
        c.args(args)
            .env("EDGECHAT_CONFIG_DIR", self.home.path().join("config"))
            .env_remove("EDGECHAT_PROFILE")
            .env_remove("RUST_LOG")
            .current_dir(self.home.path());
        c
    }

    /// Runs a command to its end with `stdin` as its standard input.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "$ edgechat {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "edgechat {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; its standard error.
    fn fails(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "edgechat {args:?} succeeded");
        String::from_utf8(out.stderr).unwrap()
    }

    fn profile_path(&self, name: &str) -> PathBuf {
        self.home.path().join("config/profiles").join(format!("{name}.toml"))
    }

    fn profile(&self, name: &str) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(self.profile_path(name)).unwrap()).unwrap()
    }

    /// `edgechat login` (or `--register`) with the password on stdin.
    fn login(&self, served: &Served, ca: &Path, user: &str, extra: &[&str]) -> String {
        let url = format!("https://localhost:{}", served.port);
        let mut args = vec!["login", "--server", &url, "--user", user, "--password-stdin"];
        let ca = ca.to_str().unwrap();
        args.extend(["--ca", ca]);
        args.extend(extra);
        self.ok(&args, b"correct horse battery\n")
    }

    /// A running `edgechat tail`, its stdout lines read by a thread.
    fn tail(&self, args: &[&str]) -> Tail {
        let mut child =
            self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let (etx, errs) = mpsc::channel();
        let err = std::io::BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let _ = etx.send(l);
            }
        });
        Tail { child, lines, errs }
    }
}

struct Tail {
    child: Child,
    lines: mpsc::Receiver<String>,
    errs: mpsc::Receiver<String>,
}

impl Tail {
    fn json(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(WAIT).expect("a line from tail within WAIT");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    fn stderr_with(&self, needle: &str) -> String {
        loop {
            let l = self.errs.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no {needle:?}"));
            if l.contains(needle) {
                return l;
            }
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A served binary, a gRPC owner of a public room `general`, and the CA path.
fn setup(dir: &Path) -> (Served, PathBuf, tokio::runtime::Runtime, User, String) {
    let served = serve_binary(&dir.join("data"), &[]);
    let ca = dir.join("data/certs/ca.pem");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (owner, room) = rt.block_on(async {
        let ch = binary_channel(served.port, &ca).await;
        let owner = User::register(ch, "owner").await;
        let room = create_room(&owner, "general", proto::Visibility::Public).await;
        (owner, room.id)
    });
    (served, ca, rt, owner, room)
}

/// Logs `name` in over gRPC too and joins `room` (the terminal client has no `join` of its
/// own outside `chat`).
fn join(rt: &tokio::runtime::Runtime, owner: &User, name: &str, room: &str) {
    rt.block_on(async {
        let r = edgechat::client::auth_client(owner.ch.clone(), None)
            .login(proto::LoginRequest {
                username: name.into(),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let u = User {
            id: String::new(),
            name: name.into(),
            token: r.access_token,
            ch: owner.ch.clone(),
        };
        u.rooms().join_room(proto::JoinRoomRequest { room_id: room.into() }).await.unwrap();
    });
}

/// The acceptance scenario, over both transports against one `edgechat serve`: register and
/// log in, `send` prints the seq, `tail --json` sees it with the sender's name, `rooms` and
/// `history` agree.
#[test]
fn send_tail_rooms_and_history_over_http2_and_http3() {
    let tmp = tempfile::tempdir().unwrap();
    let (served, ca, rt, owner, room) = setup(tmp.path());
    let desk = Desk::new();
    let said = desk.login(&served, &ca, "Alice", &["--register"]);
    assert!(
        said.contains("registered and logged in as alice") && said.contains("HTTP/2"),
        "{said}"
    );
    let said = desk.login(&served, &ca, "alice", &["--h3", "--profile", "quic"]);
    assert!(said.contains("HTTP/3"), "{said}");
    use std::os::unix::fs::PermissionsExt;
    for p in ["default", "quic"] {
        let mode = std::fs::metadata(desk.profile_path(p)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{p}");
    }
    assert_eq!(desk.profile("quic")["transport"].as_str(), Some("h3"));
    join(&rt, &owner, "alice", &room);

    let listed = desk.ok(&["profiles"], b"");
    assert!(listed.contains("* default") && listed.contains("quic"), "{listed}");

    let mut seq = 0;
    for profile in ["default", "quic"] {
        let tail =
            desk.tail(&["tail", "general", "--after-seq", "0", "--json", "--profile", profile]);
        // Every earlier event first (the join and any earlier sends), then the new one.
        let text = format!("hello over {profile}");
        let printed = desk.ok(&["send", "general", &text, "--profile", profile], b"");
        let new: u64 = printed.trim().parse().unwrap_or_else(|_| panic!("{printed:?}"));
        assert!(new > seq, "{new} after {seq}");
        seq = new;
        let got = loop {
            let v = tail.json();
            if v["seq"].as_u64() == Some(seq) {
                break v;
            }
            assert!(v["seq"].as_u64().unwrap() < seq, "{v}");
        };
        assert_eq!(got["room"], "general");
        assert_eq!(got["room_id"], room.as_str());
        assert_eq!(got["sender"], "alice");
        assert_eq!(got["text"], text.as_str());
        assert_eq!(got["kind"], "message");
    }

    // Text from standard input, and `-`.
    let s1 = desk.ok(&["send", "general"], b"from stdin\n");
    let s2 = desk.ok(&["send", "#GENERAL", "-"], "ünï\ncode\n".as_bytes());
    assert_eq!(s2.trim().parse::<u64>().unwrap(), s1.trim().parse::<u64>().unwrap() + 1);

    let rooms = desk.ok(&["rooms", "--json"], b"");
    let general: serde_json::Value = rooms
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["id"] == room.as_str())
        .expect("general listed");
    assert_eq!(general["role"], "member");
    assert_eq!(general["last_seq"].as_u64(), s2.trim().parse().ok());

    let hist = desk.ok(&["history", "general", "--limit", "2", "--json"], b"");
    let texts: Vec<String> = hist
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].to_string())
        .collect();
    assert_eq!(texts, [r#""from stdin""#, r#""ünï\ncode""#]);
    let plain = desk.ok(&["history", "general", "--limit", "1"], b"");
    assert!(plain.contains("alice: ünï"), "{plain}");

    // A file, with a caption and without one (then standard input is not read).
    let file = desk.home.path().join("notes.txt");
    std::fs::write(&file, "the minutes").unwrap();
    let path = file.to_str().unwrap();
    desk.ok(&["send", "general", "see", "attached", "--attach", path], b"");
    desk.ok(&["send", "general", "--attach", path], b"");
    let hist = desk.ok(&["history", "general", "--limit", "2", "--json"], b"");
    let sent: Vec<serde_json::Value> =
        hist.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        (sent[0]["text"].as_str(), sent[1]["text"].as_str()),
        (Some("see attached"), Some(""))
    );
    for m in &sent {
        let f = &m["attachments"][0];
        assert_eq!((f["name"].as_str(), f["size"].as_u64()), (Some("notes.txt"), Some(11)), "{m}");
        assert_eq!(f["media_type"], "text/plain");
    }
    let plain = desk.ok(&["history", "general", "--limit", "1"], b"");
    assert!(plain.contains("📎 notes.txt (11 B) f"), "{plain}");
}

/// `login` without `--server` or `--ca`, where the server's `./data` is: the defaults find
/// its CA. (The port is ephemeral here, so `--server` names it.)
#[test]
fn login_finds_the_ca_of_a_server_started_in_the_same_directory() {
    let desk = Desk::new();
    let served = serve_binary(&desk.home.path().join("data"), &[]);
    let url = format!("https://localhost:{}", served.port);
    let out = desk.ok(
        &["login", "--server", &url, "--user", "bob", "--register", "--password-stdin"],
        b"pw long enough\n",
    );
    assert!(out.contains("logged in as bob"), "{out}");
    let ca = desk.profile("default")["ca"].as_str().unwrap().to_string();
    assert!(ca.ends_with("data/certs/ca.pem") && Path::new(&ca).is_absolute(), "{ca}");
    // And the profile works from anywhere.
    let rooms = desk.ok(&["rooms"], b"");
    assert_eq!(rooms, "");
}

/// `logout` revokes the session on the server (the saved refresh token no longer works) and
/// removes the profile; a revoked or expired profile asks to log in again.
#[test]
fn logout_revokes_and_an_expired_profile_asks_to_log_in_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (served, ca, rt, owner, _room) = setup(tmp.path());
    let desk = Desk::new();
    desk.login(&served, &ca, "carol", &["--register"]);
    let token = desk.profile("default")["refresh_token"].as_str().unwrap().to_string();
    let out = desk.ok(&["logout"], b"");
    assert!(out.contains("logged out carol"), "{out}");
    assert!(!desk.profile_path("default").exists());
    let refreshed = rt.block_on(
        edgechat::client::auth_client(owner.ch.clone(), None)
            .refresh(proto::RefreshRequest { refresh_token: token.clone() }),
    );
    assert_eq!(refreshed.unwrap_err().code(), tonic::Code::Unauthenticated);
    let err = desk.fails(&["rooms"], b"");
    assert!(err.contains("no profile") || err.contains("login"), "{err}");

    // A profile whose session was revoked elsewhere: its refresh token was used by someone
    // else (a copied file), so the server ends the whole family.
    desk.login(&served, &ca, "carol", &["--profile", "work"]);
    let token = desk.profile("work")["refresh_token"].as_str().unwrap().to_string();
    rt.block_on(
        edgechat::client::auth_client(owner.ch.clone(), None)
            .refresh(proto::RefreshRequest { refresh_token: token }),
    )
    .unwrap();
    let err = desk.fails(&["rooms", "--profile", "work"], b"");
    assert!(
        err.contains("expired or was revoked")
            && err.contains("edgechat login --server")
            && err.contains("--profile work"),
        "{err}"
    );
}

/// Unknown and ambiguous room names, non-UTF-8 input, a bad CA file, a CA of another server,
/// a server that is down: each a clear message and a non-zero exit, nothing sent.
#[test]
fn bad_input_gets_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (served, ca, rt, owner, room) = setup(tmp.path());
    let desk = Desk::new();
    desk.login(&served, &ca, "dave", &["--register"]);
    join(&rt, &owner, "dave", &room);
    let (a, b) = rt.block_on(async {
        let a = create_room(&owner, "dup", proto::Visibility::Public).await;
        let b = create_room(&owner, "Dup", proto::Visibility::Public).await;
        (a.id, b.id)
    });

    let err = desk.fails(&["send", "nowhere", "hi"], b"");
    assert!(err.contains("no room `nowhere`"), "{err}");
    let err = desk.fails(&["send", "dup", "hi"], b"");
    assert!(err.contains("names 2 rooms") && err.contains(&a) && err.contains(&b), "{err}");
    let err = desk.fails(&["send", "general"], b"ok\xff\xfe");
    assert!(err.contains("not UTF-8") && err.contains("offset 2"), "{err}");
    let hist = desk.ok(&["history", "general", "--json"], b"");
    assert!(!hist.contains(r#""kind":"message""#), "nothing was sent: {hist}");
    // Control characters in a message never reach the terminal raw.
    desk.ok(&["send", "general", "bell\x07 clear\x1b[2J"], b"");
    let plain = desk.ok(&["history", "general", "--limit", "1"], b"");
    assert!(plain.contains("bell^G clear^[[2J") && !plain.contains('\x1b'), "{plain:?}");

    let url = format!("https://localhost:{}", served.port);
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let junk_s = junk.to_str().unwrap();
    let err = desk.fails(
        &[
            "login",
            "--server",
            &url,
            "--user",
            "dave",
            "--password-stdin",
            "--ca",
            junk_s,
            "--profile",
            "x",
        ],
        b"correct horse battery\n",
    );
    assert!(err.contains("junk.pem") && err.contains("not a PEM CA certificate"), "{err}");
    let err = desk.fails(
        &["login", "--server", &url, "--user", "dave", "--password-stdin", "--ca", "/nope.pem"],
        b"correct horse battery\n",
    );
    assert!(err.contains("/nope.pem") && err.contains("cannot read"), "{err}");

    let other = tmp.path().join("other");
    let init = edgechat_bin().args(["init", "--data-dir"]).arg(&other).output().unwrap();
    assert!(init.status.success(), "{init:?}");
    let other_ca = other.join("certs/ca.pem");
    let err = desk.fails(
        &[
            "login",
            "--server",
            &url,
            "--user",
            "dave",
            "--password-stdin",
            "--ca",
            other_ca.to_str().unwrap(),
            "--profile",
            "y",
        ],
        b"correct horse battery\n",
    );
    assert!(
        err.contains("does not verify against the CA in") && err.contains("other/certs/ca.pem"),
        "{err}"
    );

    // The server goes away: one-shot commands say so; nothing is left half-done.
    drop(served); // killed
    let err = desk.fails(&["rooms"], b"");
    assert!(err.contains("cannot reach https://localhost:"), "{err}");
}

/// `tail` waits for a server that is down, and resumes by itself across a server restart:
/// every message once, none lost, none doubled.
#[test]
fn tail_resumes_across_a_server_restart_without_gaps_or_doubles() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut served, ca, rt, owner, room) = setup(tmp.path());
    let desk = Desk::new();
    desk.login(&served, &ca, "erin", &["--register"]);
    join(&rt, &owner, "erin", &room);
    let first: u64 = desk.ok(&["send", "general", "one"], b"").trim().parse().unwrap();
    let tail = desk.tail(&["tail", "general", "--after-seq", &(first - 1).to_string(), "--json"]);
    assert_eq!(tail.json()["text"], "one");

    let port = served.port;
    served.signal(15);
    assert!(served.exit_status().success());
    tail.stderr_with("reconnecting");
    // Sent while the server is down: `send` retries until it is back.
    let mut sender = desk
        .cmd(&["send", "general", "two"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It has tried and failed at least once before the server comes back.
    let mut stderr = std::io::BufReader::new(sender.stderr.take().unwrap());
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(said.contains("retrying"), "{said}");
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let _served = serve_binary_at(&tmp.path().join("data"), &format!("127.0.0.1:{port}"), &[]);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut sender.stdout.take().unwrap(), &mut out).unwrap();
    assert!(sender.wait().unwrap().success());
    assert_eq!(out.trim().parse::<u64>().unwrap(), first + 1);
    desk.ok(&["send", "general", "three"], b"");
    let texts: Vec<_> = (0..2).map(|_| tail.json()).collect();
    assert_eq!(texts[0]["text"], "two");
    assert_eq!(texts[0]["seq"].as_u64(), Some(first + 1));
    assert_eq!(texts[1]["text"], "three");
    assert_eq!(texts[1]["seq"].as_u64(), Some(first + 2));
    assert!(tail.lines.recv_timeout(Duration::from_millis(300)).is_err(), "nothing doubled");
}

/// `edgechat chat` in a pseudo-terminal, its screen read by a terminal emulator (vt100).
struct Pty {
    master: std::fs::File,
    child: Child,
    screen: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
}

impl Pty {
    fn spawn(desk: &Desk, args: &[&str], cols: u16, rows: u16) -> Pty {
        use std::os::fd::FromRawFd;
        use std::os::unix::process::CommandExt;
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two fds into the ints given; the name and termios are null.
        let rc = unsafe {
            libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size)
        };
        assert_eq!(rc, 0, "openpty");
        // SAFETY: both fds were just opened and are owned by nothing else.
        let (master, slave) =
            unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
        let mut cmd = desk.cmd(args);
        cmd.env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe; the child gets the pty as its
        // controlling terminal, as a login shell would.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let screen = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(
            std::num::NonZero::new(rows).unwrap(),
            std::num::NonZero::new(cols).unwrap(),
            0,
        )));
        let mut reader = master.try_clone().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().process(&buf[..n]);
            }
        });
        Pty { master, child, screen }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits (at most [`WAIT`]) until the screen satisfies `ok`; the screen.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let screen = self.contents();
            if ok(&screen) {
                return screen;
            }
            assert!(std::time::Instant::now() < deadline, "no {what} within {WAIT:?}:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn shows(&self, text: &str) -> String {
        self.wait_for(text, |s| s.contains(text))
    }

    fn type_text(&mut self, text: &str) {
        self.master.write_all(text.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    fn quit(mut self) {
        self.type_text("/quit\r");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "chat exited with {st}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chat did not quit:\n{}",
                self.contents()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The room list's entry for `room`, e.g. ` #random          1`.
fn room_row(screen: &str, room: &str) -> String {
    let row = screen.lines().skip(1).find(|l| l.contains(room)).unwrap_or_default();
    row.split('│').next().unwrap_or_default().trim_end().to_string()
}

/// The acceptance scenario: two users in `edgechat chat` at 100×30 (one over HTTP/2, one over
/// HTTP/3) see each other's messages, presence and unread counts; the server restarts under
/// them, a message typed meanwhile arrives once, and nothing is lost or doubled.
#[test]
fn two_users_chat_in_terminals_across_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut served, ca, rt, owner, general) = setup(tmp.path());
    let random = rt.block_on(create_room(&owner, "random", proto::Visibility::Public)).id;
    let (alice, bob) = (Desk::new(), Desk::new());
    alice.login(&served, &ca, "alice", &["--register"]);
    bob.login(&served, &ca, "bob", &["--register", "--h3"]);
    for name in ["alice", "bob"] {
        join(&rt, &owner, name, &general);
        join(&rt, &owner, name, &random);
    }
    let mut a = Pty::spawn(&alice, &["chat", "general"], 100, 30);
    let mut b = Pty::spawn(&bob, &["chat", "general"], 100, 30);
    a.shows("HTTP/2 · connected");
    b.shows("HTTP/3 · connected");
    b.shows("#general");
    // Presence: each sees the other online in the member list.
    b.shows("● alice");
    a.shows("● bob");

    a.type_text("hello bob\r");
    b.shows("alice: hello bob");
    b.type_text("hi alice, 界 wide chars too\r");
    a.shows("bob: hi alice, 界 wide chars too");

    // Unread counts: a message in #random shows on both lists.
    rt.block_on(crate::support::send_rpc(&owner, &random, "r-1", "over here")).unwrap();
    b.wait_for("#random unread 1", |s| room_row(s, "#random").ends_with(" 1"));
    // Alice reads it (Tab switches rooms); Bob's count stays.
    a.type_text("\t");
    a.shows("owner: over here");
    a.wait_for("#random read", |s| !room_row(s, "#random").ends_with(" 1"));
    assert!(room_row(&b.contents(), "#random").ends_with(" 1"));
    a.type_text("\t");

    // The server goes away: both say so; Alice types on regardless.
    let port = served.port;
    served.signal(15);
    assert!(served.exit_status().success());
    a.shows("reconnecting");
    b.shows("reconnecting");
    a.type_text("typed while you were away\r");
    a.shows("(sending…)");
    let _served = serve_binary_at(&tmp.path().join("data"), &format!("127.0.0.1:{port}"), &[]);
    b.shows("alice: typed while you were away");
    a.wait_for("the send acknowledged", |s| {
        s.contains("alice: typed while you were away") && !s.contains("(sending…)")
    });
    a.shows("HTTP/2 · connected");
    b.shows("HTTP/3 · connected");
    let screen = b.contents();
    assert_eq!(screen.matches("typed while you were away").count(), 1, "{screen}");
    assert_eq!(screen.matches("alice: hello bob").count(), 1, "{screen}");

    // The room's log holds each message once, in order.
    let texts: Vec<String> = rt.block_on(async {
        let ch = binary_channel(port, &ca).await;
        let r = edgechat::client::auth_client(ch.clone(), None)
            .login(proto::LoginRequest {
                username: "owner".into(),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let owner = User { id: String::new(), name: "owner".into(), token: r.access_token, ch };
        crate::support::history(&owner, &general, 0, 0, 100)
            .await
            .unwrap()
            .events
            .iter()
            .filter_map(|e| crate::support::message_text(e).map(String::from))
            .collect()
    });
    assert_eq!(texts, ["hello bob", "hi alice, 界 wide chars too", "typed while you were away"]);
    a.quit();
    b.quit();
}
