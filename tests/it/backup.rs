//! Backups: an online backup taken while clients send is a normal database file that passes
//! `edgechat check` and, put in place of a fresh server's database, holds every message
//! acknowledged before the backup started, gapless.

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::support::{
    TestServer, all_events, edgechat_bin, fast_server, message_text, room_with, send_rpc,
};

async fn an_online_backup_while_sending_restores_everything_acknowledged_before_it() {
    let s = fast_server().await;
    let root = s.admin("root").await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[&root]).await;
    for i in 0..200 {
        send_rpc(&alice, &room, &format!("before{i}"), &format!("before {i}")).await.unwrap();
    }
    let acked_before = all_events(&alice, &room).await;
    // A sender goes on through the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (alice, room, stop) = (alice.clone(), room.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                send_rpc(&alice, &room, &format!("during{i}"), "during").await.unwrap();
                i += 1;
            }
            i
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("backup.redb");
    let mut backup = edgechat_bin()
        .args(["backup", "--user", "root", "--server"])
        .arg(s.url())
        .arg("--ca")
        .arg(s.ca())
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    backup.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    let done = tokio::task::spawn_blocking(move || backup.wait_with_output()).await.unwrap();
    let done = done.unwrap();
    stop.store(true, Ordering::Relaxed);
    let during = sender.await.unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let check = edgechat_bin().args(["check", "--file"]).arg(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Restoring is copying the file into place (here over a fresh server's empty database).
    let mut restored = TestServer::start().await;
    restored.stop().await;
    std::fs::copy(&out, restored.data_dir().join(edgechat::store::DB_FILE_NAME)).unwrap();
    restored.restart().await;
    let who = restored.channel().await;
    let mut auth = edgechat::client::auth_client(who.clone(), None);
    let login = edgechat::proto::LoginRequest {
        username: "alice".into(),
        password: "correct horse battery".into(),
    };
    let token = auth.login(login).await.unwrap().into_inner().access_token;
    let alice2 =
        crate::support::User { id: alice.id.clone(), name: "alice".into(), token, ch: who };
    let events = all_events(&alice2, &room).await;
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1), "gapless");
    for e in &acked_before {
        let got = &events[e.seq as usize - 1];
        assert_eq!(message_text(got), message_text(e), "seq {}", e.seq);
    }
    assert!(events.len() <= acked_before.len() + during as usize, "nothing invented");
}

both_transports!(an_online_backup_while_sending_restores_everything_acknowledged_before_it);

/// Copies `from` into `to` file by file, in 64 KiB reads, as `cp -r` would: no cooperation
/// from the server, files changing underneath. A file that vanishes meanwhile (a snapshot
/// pruned) is skipped, as rsync does.
fn plain_copy(from: &std::path::Path, to: &std::path::Path) {
    use std::io::Read;
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            plain_copy(&entry.path(), &target);
            continue;
        }
        let Ok(mut src) = std::fs::File::open(entry.path()) else { continue };
        let mut dst = std::fs::File::create(&target).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => dst.write_all(&buf[..n]).unwrap(),
            }
        }
    }
}

/// The acceptance test of issue 14: copies of a running server's data directory taken at
/// random moments while a client sends, each restored by the documented step (`edgechat
/// restore --data-dir COPY`), hold every message acknowledged before the copy's newest
/// snapshot, at its acknowledged seq, gapless, and nothing that was never sent.
#[tokio::test]
async fn plain_copies_of_a_running_data_directory_restore() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.backup.snapshot_interval_secs = 1;
    })
    .await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (alice, room, stop, acked) = (alice.clone(), room.clone(), stop.clone(), acked.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let cmid = format!("m{i}");
                let m = send_rpc(&alice, &room, &cmid, &cmid).await.unwrap();
                acked.lock().unwrap().push((cmid, m.seq, edgechat::clock::now_ms()));
                i += 1;
            }
        }
    });
    let snapshots = s.data_dir().join(edgechat::store::snapshot::SNAPSHOT_DIR);
    tokio::time::timeout(crate::support::WAIT, async {
        while edgechat::store::snapshot::list(&snapshots).is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a first snapshot");
    let tmp = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for n in 0..5 {
        let wait = 200 + rand::random::<u64>() % 500;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let to = tmp.path().join(format!("copy{n}"));
        let from = s.data_dir();
        let copy = to.clone();
        tokio::task::spawn_blocking(move || plain_copy(&from, &copy)).await.unwrap();
        copies.push(to);
    }
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let mut checked = 0;
    for copy in &copies {
        let out = edgechat_bin().args(["restore", "--data-dir"]).arg(copy).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        let at: i64 = said
            .split("edgechat-")
            .nth(1)
            .and_then(|rest| rest.split(".redb").next())
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("which snapshot? {said}"));
        let store =
            edgechat::store::Store::open(&copy.join(edgechat::store::DB_FILE_NAME), 1 << 20)
                .unwrap();
        let tx = store.read().unwrap();
        let (events, _) =
            edgechat::store::events::range(&tx, &room, 0, u64::MAX, 1_000_000, false).unwrap();
        assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1), "gapless");
        for (cmid, seq, when) in acked.iter().filter(|(_, _, when)| *when < at) {
            let e = &events[*seq as usize - 1];
            assert_eq!(message_text(e), Some(cmid.as_str()), "{cmid} acked at {when} < {at}");
        }
        let sent: std::collections::HashSet<&str> =
            acked.iter().map(|(c, _, _)| c.as_str()).collect();
        for e in &events {
            if let Some(text) = message_text(e) {
                // The sender stops only after its last send is acknowledged: everything in a
                // copy was sent and acknowledged, nothing invented.
                assert!(sent.contains(text), "{text} was never sent");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, copies.len());
}

/// `serve` on a data directory whose database is damaged never touches the file: it exits
/// naming the newest snapshot and the restore command, and `edgechat restore` puts the
/// snapshot in place, keeping the damaged file beside it.
#[tokio::test]
async fn serve_on_a_damaged_database_names_the_snapshot_and_restore_brings_it_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    assert!(
        edgechat_bin().args(["init", "--data-dir"]).arg(&dir).output().unwrap().status.success()
    );
    let snapshots = dir.join(edgechat::store::snapshot::SNAPSHOT_DIR);
    std::fs::create_dir_all(&snapshots).unwrap();
    let snap = snapshots.join(edgechat::store::snapshot::snapshot_name(1_000));
    let out = edgechat_bin()
        .args(["backup", "--data-dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&snap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = dir.join(edgechat::store::DB_FILE_NAME);
    let torn = vec![0x5a; 64 * 1024];
    std::fs::write(&db, &torn).unwrap();
    let out = edgechat_bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("edgechat restore") && err.contains("edgechat-0000000000001000"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), torn, "the damaged file is left as it was");
    let out = edgechat_bin().args(["restore", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".replaced-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept beside");
    let check = edgechat_bin().args(["check", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// `edgechat compact` on a stopped server's data directory: the file shrinks (here: after a
/// busy spell of sends across rooms) and holds the same history.
#[tokio::test]
async fn compact_rewrites_the_database_smaller_with_the_same_history() {
    let mut s = fast_server().await;
    let alice = s.user("alice").await;
    let mut rooms = Vec::new();
    for _ in 0..8 {
        rooms.push(room_with(&alice, &[]).await);
    }
    for i in 0..400 {
        let room = &rooms[i % rooms.len()];
        send_rpc(&alice, room, &format!("c{i}"), &message_text_of(i)).await.unwrap();
    }
    let mut before = Vec::new();
    for room in &rooms {
        before.push(all_events(&alice, room).await);
    }
    s.stop().await;
    let db = s.data_dir().join(edgechat::store::DB_FILE_NAME);
    let size = std::fs::metadata(&db).unwrap().len();
    let out = edgechat_bin().args(["compact", "--data-dir"]).arg(s.data_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("compacted"));
    let compacted = std::fs::metadata(&db).unwrap().len();
    assert!(compacted < size, "{compacted} bytes after, {size} before");
    s.restart().await;
    for (room, before) in rooms.iter().zip(&before) {
        assert_eq!(&all_events(&alice, room).await, before);
    }
}

fn message_text_of(i: usize) -> String {
    format!("message {i} {}", "x".repeat(100))
}
