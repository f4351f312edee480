//! The crash test: SIGKILL the real binary while clients send, restart it on the same data
//! directory, and check that every acknowledged message is stored exactly once with its acked
//! seq, and that the room's seqs are gapless. Several cycles; in-flight sends are retried with
//! their original client_message_id after each restart.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgechat::client;
use edgechat::proto;

use crate::support::{User, all_events, edgechat_bin as edgechat};

/// `edgechat serve` with the send rate limit out of the way.
fn serve(dir: &std::path::Path) -> (crate::support::Served, u16) {
    let fast = [
        ("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1000000"),
        ("EDGECHAT_LIMITS_SEND_BURST", "100000"),
    ];
    let served = crate::support::serve_binary(dir, &fast);
    let port = served.port;
    (served, port)
}

const PASSWORD: &str = "correct horse battery";

async fn login(port: u16, ca: &std::path::Path) -> User {
    let ch = crate::support::binary_channel(port, ca).await;
    let r = client::auth_client(ch.clone(), None)
        .login(proto::LoginRequest { username: "alice".into(), password: PASSWORD.into() })
        .await
        .expect("login")
        .into_inner();
    User { id: r.user.unwrap().id, name: "alice".into(), token: r.access_token, ch }
}

#[tokio::test]
async fn sigkill_while_sending_loses_no_acknowledged_message() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut add = edgechat()
        .args(["user", "add", "alice", "--role", "member", "--password-stdin", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());
    let ca = dir.join("certs/ca.pem");

    let (mut child, port) = serve(&dir);
    let alice = login(port, &ca).await;
    let room = crate::support::room_with(&alice, &[]).await;
    child.child.kill().unwrap();
    child.child.wait().unwrap();

    // cmid -> acked seq, across all cycles.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    // Per sender, the send in flight when the server died (retried after restart).
    let mut pending: Vec<Option<String>> = vec![None; 4];
    for cycle in 0..3 {
        let (mut child, port) = serve(&dir);
        let alice = login(port, &ca).await;
        let mut tasks = Vec::new();
        for (w, carry) in pending.iter().enumerate() {
            let (alice, room, acked, carry) =
                (alice.clone(), room.clone(), acked.clone(), carry.clone());
            tasks.push(tokio::spawn(async move {
                let mut next = 0;
                let mut current = carry;
                loop {
                    let cmid = current.clone().unwrap_or_else(|| format!("c{cycle}-w{w}-{next}"));
                    current = Some(cmid.clone());
                    match crate::support::send_rpc(&alice, &room, &cmid, &cmid).await {
                        Ok(m) => {
                            let previous = acked.lock().unwrap().insert(cmid.clone(), m.seq);
                            assert!(
                                previous.is_none() || previous == Some(m.seq),
                                "a retry changed the seq of {cmid}"
                            );
                            current = None;
                            next += 1;
                        }
                        // The server died: this send may or may not be stored.
                        Err(_) => return current,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 100 * cycle)).await;
        child.child.kill().unwrap(); // SIGKILL
        child.child.wait().unwrap();
        for (w, t) in tasks.into_iter().enumerate() {
            pending[w] = t.await.unwrap();
        }
    }

    let (mut child, port) = serve(&dir);
    let alice = login(port, &ca).await;
    let events = all_events(&alice, &room).await;
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1), "seqs are gapless");
    let mut stored: HashMap<String, u64> = HashMap::new();
    for e in &events {
        if let Some(proto::room_event::Kind::Message(m)) = &e.kind {
            assert!(
                stored.insert(m.client_message_id.clone(), e.seq).is_none(),
                "{} stored twice",
                m.client_message_id
            );
        }
    }
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 20, "the test sent too little to mean anything: {}", acked.len());
    for (cmid, seq) in acked.iter() {
        assert_eq!(
            stored.get(cmid),
            Some(seq),
            "acknowledged {cmid} at {seq} must be stored there"
        );
    }
}
