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
