//! Search end to end (issue 19): current text only, newest first across the caller's rooms,
//! paging, bad queries, and the permission rows (readers, read-only rooms, outsiders, the
//! banned, those who left, private and direct rooms, a global admin outside a room).

use edgechat::proto;
use tonic::Code;

use crate::support::{
    TestServer, User, ban, create_room, expect_code, room_with, send_rpc, set_role,
};

async fn server() -> TestServer {
    TestServer::start_unthrottled().await
}

async fn search_page(
    u: &User,
    query: &str,
    room: &str,
    limit: u32,
    page_token: &str,
) -> Result<proto::SearchResponse, tonic::Status> {
    u.chat()
        .search(proto::SearchRequest {
            query: query.into(),
            room_id: room.into(),
            limit,
            page_token: page_token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Every hit, page after page of `limit`, as (room, seq); checks each page's shape.
async fn search_all(u: &User, query: &str, room: &str, limit: u32) -> Vec<(String, u64)> {
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let page = search_page(u, query, room, limit, &token).await.expect("search");
        assert!(page.hits.len() <= limit as usize);
        for h in &page.hits {
            let m = h.message.as_ref().expect("a hit has its message");
            assert_eq!((m.room_id.as_str(), m.seq), (h.room_id.as_str(), h.seq));
            out.push((h.room_id.clone(), h.seq));
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        assert_eq!(page.hits.len(), limit as usize, "a short page is the last");
        token = page.next_page_token;
    }
}

async fn search(u: &User, query: &str) -> Vec<(String, u64)> {
    search_all(u, query, "", 100).await
}

both_transports! {
async fn search_finds_current_text_newest_first_across_rooms_and_pages() {
    let s = server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let a = room_with(&alice, &[&bob]).await;
    let b = create_room(&alice, "ops", proto::Visibility::Private).await.id;
    let mut sent = Vec::new();
    for (u, room, cmid, text) in [
        (&alice, &a, "1", "Deploy the build tonight"),
        (&bob, &a, "2", "lunch? nothing planned"),
        (&bob, &a, "3", "the deploy FAILED, again"),
        (&alice, &b, "4", "deploy of ops: fine"),
        (&alice, &a, "5", "deploy typo"),
        (&alice, &b, "6", "ops deploy done"),
    ] {
        let m = send_rpc(u, room, cmid, text).await.unwrap();
        sent.push((room.clone(), m.seq, m.sent_at_ms));
    }
    let [m1, lunch, m3, b1, gone, b2] = [0, 1, 2, 3, 4, 5].map(|i| sent[i].1);
    // The order results come in: newest first by time, ties by room id, then seq (two sends
    // may share a millisecond).
    let mine = |v: &[(&String, u64)]| {
        let mut v: Vec<_> = v
            .iter()
            .map(|(r, s)| {
                let at = sent.iter().find(|x| x.0 == **r && x.1 == *s).unwrap().2;
                (at, (*r).clone(), *s)
            })
            .collect();
        v.sort_by(|x, y| y.cmp(x));
        v.into_iter().map(|(_, r, s)| (r, s)).collect::<Vec<_>>()
    };
    // Newest first across both rooms; a retry is one message, not two hits.
    send_rpc(&alice, &a, "1", "Deploy the build tonight").await.unwrap();
    assert_eq!(
        search(&alice, "deploy").await,
        mine(&[(&b, b2), (&a, gone), (&b, b1), (&a, m3), (&a, m1)])
    );
    // Every word must be there, matched whole and case-insensitively.
    assert_eq!(search(&alice, "DEPLOY failed").await, mine(&[(&a, m3)]));
    assert_eq!(search(&alice, "deploy failed nope").await, Vec::new());
    assert_eq!(search(&alice, "deplo").await, Vec::new());
    // An edit is found by its new text only; a delete is not found at all.
    alice
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: a.clone(), seq: gone })
        .await
        .unwrap();
    bob.chat()
        .edit_message(proto::EditMessageRequest {
            room_id: a.clone(),
            seq: lunch,
            text: "lunch after the deploy".into(),
        })
        .await
        .unwrap();
    assert_eq!(search(&alice, "nothing planned").await, Vec::new());
    assert_eq!(search(&alice, "typo").await, Vec::new());
    assert_eq!(
        search(&alice, "deploy").await,
        mine(&[(&b, b2), (&b, b1), (&a, m3), (&a, lunch), (&a, m1)])
    );
    // Bob is not in the private room: its messages are not his to find.
    assert_eq!(search(&bob, "deploy").await, mine(&[(&a, m3), (&a, lunch), (&a, m1)]));
    // One room only.
    assert_eq!(search_all(&alice, "deploy", &b, 100).await, mine(&[(&b, b2), (&b, b1)]));
    // Pages of two, then of one, walk the same list without a gap or a repeat.
    let all = search(&alice, "deploy").await;
    assert_eq!(search_all(&alice, "deploy", "", 2).await, all);
    assert_eq!(search_all(&alice, "deploy", "", 1).await, all);
    // A reply is found too, with its thread; reactions say whose.
    let r = alice
        .chat()
        .send_message(proto::SendMessageRequest {
            room_id: a.clone(),
            client_message_id: "7".into(),
            text: "rollback the deploy".into(),
            reply_to_seq: m3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    alice
        .chat()
        .add_reaction(proto::AddReactionRequest {
            room_id: a.clone(),
            seq: r.seq,
            emoji: "👍".into(),
        })
        .await
        .unwrap();
    let page = search_page(&bob, "rollback", "", 0, "").await.unwrap();
    assert_eq!(page.hits.len(), 1);
    let hit = page.hits[0].message.clone().unwrap();
    assert_eq!((hit.thread_seq, hit.text.as_str()), (m3, "rollback the deploy"));
    assert_eq!(hit.reactions.len(), 1);
    assert!(!hit.reactions[0].mine, "bob did not react");
    let page = search_page(&alice, "rollback", "", 0, "").await.unwrap();
    assert!(page.hits[0].message.as_ref().unwrap().reactions[0].mine);
    assert!(page.hits[0].at_ms > 0);
}
}

both_transports! {
async fn search_refuses_bad_queries_and_treats_operators_as_words() {
    let s = server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let m = send_rpc(&alice, &room, "1", "\"Quoted\" -minus OR star* title:x").await.unwrap();
    for bad in ["", "   ", "*** -- \"\" () : a", "!"] {
        let msg = expect_code(search_page(&alice, bad, "", 0, "").await, Code::InvalidArgument);
        assert!(msg.contains("no word"), "{bad:?}: {msg}");
    }
    let msg = expect_code(
        search_page(&alice, &"word ".repeat(60), "", 0, "").await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("300 bytes; at most 256"), "{msg}");
    let msg = expect_code(
        search_page(&alice, "aa bb cc dd ee ff gg hh ii", "", 0, "").await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("at most 8"), "{msg}");
    for token in ["x", "1.2", "9.9.", "x.1.r"] {
        let msg =
            expect_code(search_page(&alice, "quoted", "", 0, token).await, Code::InvalidArgument);
        assert!(msg.contains("page_token"), "{msg}");
    }
    // Operators are separators (or words), never syntax: each of these finds the message.
    for q in ["\"quoted\"", "-minus", "+title", "star*", "OR quoted", "title:star", "(minus)"] {
        assert_eq!(search(&alice, q).await, vec![(room.clone(), m.seq)], "{q}");
    }
    // A token from another query or a room one is not in finds nothing wrong: it is only a
    // position.
    let far = format!("{}.5.r000000000000000000000000", i64::MAX);
    assert_eq!(search_all(&alice, "quoted", "", 10).await.len(), 1);
    let page = search_page(&alice, "quoted", "", 10, &far).await.unwrap();
    assert_eq!(page.hits.len(), 1);
    assert!(page.next_page_token.is_empty());
}
}

both_transports! {
async fn search_permission_rows() {
    let s = server().await;
    let owner = s.user("owner").await;
    let reader = s.user("reader").await;
    let member = s.user("member").await;
    let outsider = s.user("outsider").await;
    let admin = s.admin("root").await;
    let room = room_with(&owner, &[&reader, &member]).await;
    set_role(&owner, &room, &reader, proto::RoomRole::Reader).await;
    let m = send_rpc(&owner, &room, "1", "needle in the public room").await.unwrap().seq;
    let hit = vec![(room.clone(), m)];
    // Readers search; so does everyone in a read-only room.
    assert_eq!(search(&reader, "needle").await, hit);
    owner
        .rooms()
        .update_room(proto::UpdateRoomRequest {
            room_id: room.clone(),
            topic: None,
            read_only: Some(true),
        })
        .await
        .unwrap();
    assert_eq!(search(&member, "needle").await, hit);
    assert_eq!(search_all(&member, "needle", &room, 10).await, hit);
    // Outsiders of a public room: its history only once they join.
    assert_eq!(search(&outsider, "needle").await, Vec::new());
    let msg = expect_code(search_page(&outsider, "needle", &room, 0, "").await, Code::PermissionDenied);
    assert!(msg.contains("join"), "{msg}");
    // A global admin who is no member is refused the same way (History would let them read).
    let msg = expect_code(search_page(&admin, "needle", &room, 0, "").await, Code::PermissionDenied);
    assert!(msg.contains("member"), "{msg}");
    assert_eq!(search(&admin, "needle").await, Vec::new());
    // The banned and those who left no longer find it.
    ban(&owner, &room, &member, "spam").await;
    assert_eq!(search(&member, "needle").await, Vec::new());
    let msg = expect_code(search_page(&member, "needle", &room, 0, "").await, Code::PermissionDenied);
    assert!(msg.contains("banned"), "{msg}");
    reader.rooms().leave_room(proto::LeaveRoomRequest { room_id: room.clone() }).await.unwrap();
    assert_eq!(search(&reader, "needle").await, Vec::new());
    expect_code(search_page(&reader, "needle", &room, 0, "").await, Code::PermissionDenied);
    // A private room does not exist for outsiders; nor does an unknown one.
    let private = create_room(&owner, "secret", proto::Visibility::Private).await.id;
    send_rpc(&owner, &private, "2", "needle in private").await.unwrap();
    expect_code(search_page(&outsider, "needle", &private, 0, "").await, Code::NotFound);
    expect_code(search_page(&outsider, "needle", "r-nope", 0, "").await, Code::NotFound);
    // A direct room: both find its messages; anyone else is told it does not exist.
    let direct = owner
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: outsider.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let d = send_rpc(&outsider, &direct, "3", "needle direct").await.unwrap().seq;
    assert_eq!(search(&outsider, "needle").await, vec![(direct.clone(), d)]);
    assert_eq!(search_all(&owner, "needle direct", &direct, 10).await, vec![(direct.clone(), d)]);
    expect_code(search_page(&reader, "needle", &direct, 0, "").await, Code::NotFound);
}
}

both_transports! {
async fn searching_too_fast_is_refused_with_when_to_retry() {
    let s = TestServer::start_with(|c| {
        c.limits.search_rate_per_sec = 0.01;
        c.limits.search_burst = 3;
    })
    .await;
    let alice = s.user("alice").await;
    for _ in 0..3 {
        search_page(&alice, "anything", "", 0, "").await.unwrap();
    }
    let msg = expect_code(search_page(&alice, "anything", "", 0, "").await, Code::ResourceExhausted);
    assert!(msg.contains("retry in"), "{msg}");
    // Bad queries are refused before they cost a search.
    expect_code(search_page(&alice, "", "", 0, "").await, Code::InvalidArgument);
    // Per user.
    let bob = s.user("bob").await;
    search_page(&bob, "anything", "", 0, "").await.unwrap();
}
}
