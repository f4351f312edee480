//! The binary itself: `init`, `user add` while stopped and while running, `serve` and its
//! config errors.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::TestServer;

fn edgechat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgechat"))
}

fn user_add(dir: &std::path::Path, name: &str, role: &str, password: &str) -> std::process::Output {
    let mut child = edgechat()
        .args(["user", "add", name, "--role", role, "--password-stdin", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn user_add_works_while_stopped_and_refuses_while_running() {
    let mut s = TestServer::start().await;
    let dir = s.data_dir();
    let out = user_add(&dir, "boss", "admin", "a-long-password");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    s.stop().await;
    // The in-process server lets go of the file as its last tasks wind down; on a loaded
    // machine that can take a moment after stop() returns (a real `serve` process exits).
    let mut out = user_add(&dir, "Boss", "admin", "a-long-password");
    for _ in 0..60 {
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("in use") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        out = user_add(&dir, "Boss", "admin", "a-long-password");
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user boss (admin)"));
    let out = user_add(&dir, "boss", "admin", "a-long-password");
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
    let out = user_add(&dir, "x", "admin", "a-long-password");
    assert!(String::from_utf8_lossy(&out.stderr).contains("username"));
}

#[test]
fn init_then_serve_rejects_a_bad_config_key_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let out = edgechat().args(["init", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("certs/client.pem").exists());
    let out = edgechat()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("EDGECHAT_TLS_CLIENT_AUTH", "maybe")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls.client_auth") && err.contains("maybe"), "{err}");
    let out = edgechat()
        .args(["serve", "--client-auth", "sometimes", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.client_auth"));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["init", "--help"],
        &["user", "add", "--help"],
        &["keys", "rotate", "--help"],
        &["certs", "issue-client", "--help"],
    ] {
        let out = edgechat().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

#[tokio::test]
async fn keys_rotate_signs_with_the_new_key_and_still_trusts_the_old_one() {
    let mut s = TestServer::start().await;
    let before = s.register("alice").await;
    let old_kid = s.keyring().active().kid.clone();
    s.stop().await;
    let out = edgechat().args(["keys", "rotate", "--data-dir"]).arg(s.data_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    s.restart().await;
    let new_kid = s.keyring().active().kid.clone();
    assert_ne!(old_kid, new_kid);
    // A token signed with the old key still works: nobody is logged out by a rotation.
    let ch = s.channel().await;
    edgechat::client::auth_client(ch.clone(), Some(&before.access_token))
        .who_am_i(edgechat::proto::WhoAmIRequest {})
        .await
        .unwrap();
    // New tokens carry the new kid.
    let fresh = edgechat::client::auth_client(ch, None)
        .login(edgechat::proto::LoginRequest {
            username: "alice".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let header = fresh.access_token.split('.').next().unwrap().to_string();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    assert!(String::from_utf8_lossy(&header).contains(&new_kid));
}

/// A power cut during `init` leaves keys without their certificates and temp files: the next
/// `init` (or `serve`) finishes the job; a certificate without its key is an error that names
/// the file to remove.
#[test]
fn init_completes_a_half_initialised_directory_or_names_the_file_to_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    assert!(edgechat().args(["init", "--data-dir"]).arg(&dir).output().unwrap().status.success());
    std::fs::remove_file(dir.join("certs/server.pem")).unwrap();
    let junk = dir.join("certs").join(format!("{}server.pem-1", edgechat::files::TEMP_PREFIX));
    std::fs::write(&junk, b"half a certificate").unwrap();
    let out = edgechat().args(["init", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("server.pem"));
    assert!(!junk.exists());
    std::fs::remove_file(dir.join("certs/client.key")).unwrap();
    let mut serve = edgechat()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must refuse to start; if it started instead, stop it and fail rather than hang.
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    while serve.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            serve.kill().unwrap();
            panic!("serve started although certs/client.key is missing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = serve.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("client.key") && err.contains("remove") && err.contains("client.pem"),
        "{err}"
    );
}

/// The signing key `init` writes opens in OpenSSL (`openssl pkey`), as operators try. Where
/// the machine has no `openssl`, the DER layout is pinned by the unit test in `auth::keys`.
#[test]
fn openssl_reads_the_signing_key_init_writes() {
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        eprintln!("no openssl here; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    assert!(edgechat().args(["init", "--data-dir"]).arg(&dir).output().unwrap().status.success());
    let key = std::fs::read_dir(dir.join("keys")).unwrap().next().unwrap().unwrap().path();
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ED25519"));
}

/// A value that parses but would break at run time is refused at start, naming the key.
#[test]
fn serve_refuses_a_send_rate_that_would_overflow_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = edgechat()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("d"))
        .env("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1e-20")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.send_rate_per_sec"), "{err}");
}

/// `edgechat bench fanout` and `bench durable` as a user runs them: each starts its own
/// server, and the JSON figures add up (every message delivered to every subscriber, no gaps;
/// every send acked and stored). Parameters that cannot work are refused before any load.
#[test]
fn bench_scenarios_run_and_their_figures_add_up() {
    let run = |args: &[&str]| {
        let out = edgechat().arg("bench").args(args).arg("--json").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let f = run(&["fanout", "--subscribers", "3", "--rate", "40", "--secs", "1"]);
    let sent = f["sent"].as_u64().unwrap();
    assert!(sent > 0, "{f}");
    assert_eq!(f["delivered"].as_u64().unwrap(), sent * 3, "{f}");
    assert_eq!(
        (f["gaps"].as_u64(), f["repeats"].as_u64(), f["undelivered"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{f}"
    );
    assert!(f["p99_ms"].as_f64().unwrap() > 0.0 && f["server_cpu_secs"].as_f64().is_some(), "{f}");
    // Lag is read from the server's own counters (a server the bench started).
    assert!(f["server_catch_ups"].as_u64().is_some(), "{f}");
    assert!(f["server_slow_consumer_disconnects"].as_u64().is_some(), "{f}");
    let d = run(&["durable", "--senders", "2", "--messages", "30"]);
    assert_eq!((d["acked"].as_u64(), d["errors"].as_u64()), (Some(30), Some(0)), "{d}");
    assert!(d["db_bytes"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(d["via"], "unary", "{d}");
    // The same over Connect streams: one Send frame in flight per stream, acked by SendAck.
    let d = run(&["durable", "--senders", "3", "--messages", "40", "--via", "stream"]);
    assert_eq!((d["acked"].as_u64(), d["errors"].as_u64()), (Some(40), Some(0)), "{d}");
    assert_eq!(d["via"], "stream", "{d}");
    // Over HTTP/3 the stream's connection must outlive the setup that opened it.
    let d = run(&[
        "durable",
        "--senders",
        "2",
        "--messages",
        "20",
        "--via",
        "stream",
        "--transport",
        "h3",
    ]);
    assert_eq!((d["acked"].as_u64(), d["errors"].as_u64()), (Some(20), Some(0)), "{d}");
    let i = run(&["idle", "--connections", "20", "--users", "2"]);
    assert_eq!(i["connections"].as_u64(), Some(20), "{i}");
    assert!(i["kib_per_connection"].as_f64().is_some(), "{i}");
    let m = run(&[
        "rooms",
        "--rooms",
        "4",
        "--members",
        "3",
        "--users",
        "6",
        "--rate",
        "20",
        "--secs",
        "1",
    ]);
    let sent = m["sent"].as_u64().unwrap();
    assert!(sent > 0 && m["send_errors"].as_u64() == Some(0), "{m}");
    // Every room has exactly 3 members, the sender among them.
    assert_eq!(m["delivered"].as_u64().unwrap(), sent * 3, "{m}");
    assert_eq!((m["gaps"].as_u64(), m["undelivered"].as_u64()), (Some(0), Some(0)), "{m}");
    assert!(m["server_core_percent"].as_f64().is_some() && m["stopped_early"].is_null(), "{m}");
    let r = run(&["resume", "--clients", "10", "--missed", "15", "--users", "2"]);
    assert_eq!((r["not_caught_up"].as_u64(), r["gaps"].as_u64()), (Some(0), Some(0)), "{r}");
    for bad in [
        &["fanout", "--secs", "0"][..],
        &["fanout", "--subscribers", "0"],
        &["durable", "--secs", "-1"],
        &["durable", "--via", "carrier-pigeon"],
        &["rooms", "--members", "7", "--users", "6"],
        &["rooms", "--rooms", "0"],
    ] {
        let out = edgechat().arg("bench").args(bad).output().unwrap();
        assert!(!out.status.success(), "{bad:?} was accepted");
    }
}

/// Starts `edgechat bench ARGS --json` and returns it once its load runs (its `running:`
/// progress line), with the rest of its stderr still to read.
fn bench_under_load(
    args: &[&str],
) -> (std::process::Child, std::io::BufReader<std::process::ChildStderr>) {
    use std::io::BufRead;
    let mut child = edgechat()
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("bench: running") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "bench ended before its load ran");
    }
    (child, err)
}

/// The pids of `parent`'s children.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1));
        if ppid == Some(parent.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn a_stopped_bench_reports_what_it_measured_and_stops_its_server() {
    use std::io::Read;
    let finish = |mut child: std::process::Child, mut err: std::io::BufReader<_>| {
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let mut stderr = String::new();
        err.read_to_string(&mut stderr).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "a stopped run must fail: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).expect(&stderr);
        (report, stderr, child.id())
    };
    // Ctrl-C: the partial figures, marked, and the server it started stopped and removed.
    let (child, err) = bench_under_load(&["durable", "--senders", "2", "--secs", "600"]);
    let server = children_of(child.id());
    assert_eq!(server.len(), 1, "{server:?}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (report, stderr, pid) = finish(child, err);
    assert!(report["stopped_early"].as_str().unwrap().contains("Ctrl-C"), "{report}");
    // What it measured until then (how much depends on how loaded this machine is).
    assert!(report["acked"].as_u64().is_some() && report["secs"].as_f64().is_some(), "{report}");
    assert!(stderr.contains("figures above are partial"), "{stderr}");
    assert!(!std::path::Path::new(&format!("/proc/{}", server[0])).exists(), "server still runs");
    let leftover = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&format!("edgechat-bench-{pid}-")));
    assert!(!leftover, "the temporary data directory was left behind");

    // The server goes away mid-run: a clear reason, and what was measured until then.
    let (child, err) =
        bench_under_load(&["fanout", "--subscribers", "3", "--rate", "50", "--secs", "600"]);
    let server = children_of(child.id());
    assert_eq!(server.len(), 1, "{server:?}");
    // SAFETY: kill(2) on a process this test's child started.
    unsafe { libc::kill(server[0] as i32, libc::SIGKILL) };
    let (report, stderr, _) = finish(child, err);
    let why = report["stopped_early"].as_str().unwrap();
    assert!(why.contains("server") && why.contains("went away"), "{report}");
    assert!(
        report["sent"].as_u64().is_some() && report["delivered"].as_u64().is_some(),
        "{report}"
    );
    assert!(stderr.contains("figures above are partial"), "{stderr}");
}
