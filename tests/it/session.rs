//! The client library's session helper: resumes every room and re-sends unacknowledged
//! messages after the server restarts under it, with no gap and no duplicate.

use std::collections::BTreeMap;

use edgechat::client::session::{ChatSession, Client, SessionEvent};
use edgechat::proto::{room_event::Kind as E, server_frame::Kind as S};

use crate::support::{TestServer, WAIT, all_events, fast_server, room_with};

async fn next(s: &mut ChatSession) -> SessionEvent {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("session event in time")
        .expect("session alive")
}

both_transports! {
async fn a_session_resumes_gaplessly_across_a_server_restart() {
    let mut s: TestServer = fast_server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let client = Client::new(&s.url(), s.tls());
    client.login("alice", "correct horse battery").await.unwrap();
    let mut session = ChatSession::start(client.clone());
    session.subscribe(&room, Some(0));
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut acked = 0;
    for i in 0..20 {
        session.send(&room, &format!("before {i}"));
    }
    while acked < 20 {
        match next(&mut session).await {
            SessionEvent::Frame(S::SendAck(_)) => acked += 1,
            SessionEvent::Frame(S::Event(e)) => {
                assert!(
                    seen.insert(e.seq, format!("{:?}", e.kind)).is_none(),
                    "duplicate seq {}",
                    e.seq
                );
            }
            _ => {}
        }
    }
    // The server goes away under the session; messages typed meanwhile wait.
    s.restart().await;
    for i in 0..20 {
        session.send(&room, &format!("after {i}"));
    }
    let mut reconnected = false;
    while acked < 40 || seen.len() < 41 {
        match next(&mut session).await {
            SessionEvent::Connected => reconnected = true,
            SessionEvent::Frame(S::SendAck(_)) => acked += 1,
            SessionEvent::Frame(S::Event(e)) => {
                assert!(
                    seen.insert(e.seq, format!("{:?}", e.kind)).is_none(),
                    "duplicate seq {}",
                    e.seq
                );
            }
            _ => {}
        }
    }
    assert!(reconnected);
    let seqs: Vec<u64> = seen.keys().copied().collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "no gap, no duplicate");
    // The server stored each message exactly once.
    let events = all_events(&alice, &room).await;
    let texts: Vec<String> = events
        .iter()
        .filter_map(|e| if let Some(E::Message(m)) = &e.kind { Some(m.text.clone()) } else { None })
        .collect();
    assert_eq!(texts.len(), 40);
    assert!(texts[..20].iter().enumerate().all(|(i, t)| *t == format!("before {i}")));
    assert!(texts[20..].iter().enumerate().all(|(i, t)| *t == format!("after {i}")));
}
}

both_transports! {
async fn every_rotated_refresh_token_reaches_the_token_hook() {
    let s = TestServer::start().await;
    s.user("alice").await;
    let client = Client::new(&s.url(), s.tls());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let hook = seen.clone();
    client.on_tokens(move |t| hook.lock().unwrap().push(t.refresh_token.clone()));
    let first = client.login("alice", "correct horse battery").await.unwrap();
    // An access token about to expire: the next call refreshes, rotating the refresh token.
    let mut stale = client.tokens().unwrap();
    stale.access_expires_at_ms = 0;
    client.set_tokens(stale);
    client.chat().await.unwrap();
    let now = client.tokens().unwrap().refresh_token;
    let seen = seen.lock().unwrap().clone();
    assert_ne!(now, first.refresh_token, "the refresh rotated the token");
    assert_eq!(seen.first(), Some(&first.refresh_token), "login reported its tokens");
    assert_eq!(seen.last(), Some(&now), "the hook saw the rotated token: {seen:?}");
    // The rotated-away token is spent: a process that saved only the first would be refused.
    let mut auth = edgechat::client::auth_client(s.channel().await, None);
    let reused = auth
        .refresh(edgechat::proto::RefreshRequest { refresh_token: first.refresh_token })
        .await;
    assert_eq!(reused.unwrap_err().code(), tonic::Code::Unauthenticated);
}
}
