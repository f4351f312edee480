//! `Listen` + `SendFrame`: `Connect` for clients that cannot stream requests, on both
//! transports and over gRPC-Web (HTTP/1.1, as a browser calls it).

use edgechat::proto::{self, client_frame, server_frame::Kind as S};
use tonic::Code;

use crate::support::{Conn, TestServer, WAIT, expect_code, message_text, room_with, send_rpc};

fn ping(nonce: u64) -> proto::ClientFrame {
    proto::ClientFrame { kind: Some(client_frame::Kind::Ping(proto::Ping { nonce })) }
}

both_transports! {
async fn a_listen_stream_chats_like_connect() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let first_seq = send_rpc(&alice, &room, "before-1", "one").await.unwrap().seq;
    send_rpc(&alice, &room, "before-2", "two").await.unwrap();
    // Bob follows the room from the request, resuming after the first message.
    let mut b = Conn::listen(&bob, &[(&room, Some(first_seq))]).await;
    let id = b.stream_id().to_string();
    assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    let sub = b.until(|f| if let S::Subscribed(x) = f { Some(x.clone()) } else { None }).await;
    assert_eq!(sub.room_id, room);
    let missed = b.event().await;
    assert_eq!((missed.seq, message_text(&missed)), (first_seq + 1, Some("two")), "gapless resume");
    // Alice subscribes and sends through SendFrame; the answers come on her Listen stream.
    let mut a = Conn::listen(&alice, &[]).await;
    assert_ne!(a.stream_id(), id);
    a.subscribe(&room, None).await;
    a.send(&room, "live-1", "hello from a browser").await;
    let ack = a.until(|f| if let S::SendAck(x) = f { Some(x.clone()) } else { None }).await;
    assert_eq!((ack.client_message_id.as_str(), ack.room_id.as_str()), ("live-1", room.as_str()));
    let got = b.event().await;
    assert_eq!((got.seq, message_text(&got)), (ack.seq, Some("hello from a browser")));
    a.ping(7).await;
    // Retrying with the same client_message_id is the same message (idempotent).
    a.send(&room, "live-1", "hello again?").await;
    let again = a.until(|f| if let S::SendAck(x) = f { Some(x.clone()) } else { None }).await;
    assert_eq!(again.seq, ack.seq);
}
}

both_transports! {
async fn a_stream_id_belongs_to_its_owner_and_ends_with_its_stream() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mallory = s.user("mallory").await;
    // The stream on a connection of its own, so that the client can go away whole below.
    let own = crate::support::User {
        id: alice.id.clone(),
        name: alice.name.clone(),
        token: alice.token.clone(),
        ch: s.channel().await,
    };
    let mut a = Conn::listen(&own, &[]).await;
    let id = a.stream_id().to_string();
    let send = |who: &crate::support::User, stream_id: &str, frame: Option<proto::ClientFrame>| {
        let mut chat = who.chat();
        let req = proto::SendFrameRequest { stream_id: stream_id.to_string(), frame };
        async move { chat.send_frame(req).await }
    };
    // Someone else's stream is not there for them, exactly like a made-up id.
    let why = expect_code(send(&mallory, &id, Some(ping(1))).await, Code::NotFound);
    assert!(why.contains("Listen"), "{why}");
    expect_code(send(&alice, "0123456789abcdef0123456789abcdef", Some(ping(1))).await, Code::NotFound);
    expect_code(send(&alice, "", Some(ping(1))).await, Code::InvalidArgument);
    let why = expect_code(send(&alice, &id, None).await, Code::InvalidArgument);
    assert!(why.contains("frame"), "{why}");
    // Mallory's attempts reached nothing: Alice's stream answers her own ping only.
    a.frame_raw(ping(2)).await;
    let frames = a.frames_until_pong(3).await;
    assert!(
        frames.iter().all(|f| matches!(f, S::Pong(p) if p.nonce == 2)),
        "only Alice's own ping was answered: {frames:?}"
    );
    // The client goes away (stream and connection): its session ends by itself (nothing is
    // sent to it meanwhile, so nothing else could end it), and the id with it.
    let mut open = s.api().listeners.watch();
    assert_eq!(*open.borrow(), 1);
    drop(a);
    drop(own);
    let closed = tokio::time::timeout(WAIT, open.wait_for(|n| *n == 0)).await;
    assert!(closed.is_ok(), "the session outlived its client");
    expect_code(send(&alice, &id, Some(ping(4))).await, Code::NotFound);
}
}

both_transports! {
async fn a_frame_that_fails_is_answered_on_the_stream() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let bobs_room = room_with(&bob, &[]).await;
    let mut a = Conn::listen(&alice, &[("r000000000000000000000000", None)]).await;
    // A subscription in the request that fails is a StreamError, and the stream lives on.
    assert_eq!(a.error().await.code, "NOT_FOUND");
    // SendFrame takes each frame; the refusal comes on the stream, naming the send.
    a.frame_raw(proto::ClientFrame { kind: None }).await;
    assert_eq!(a.error().await.code, "INVALID_ARGUMENT");
    a.send(&bobs_room, "nope-1", "let me in").await;
    let e = a.error().await;
    assert_eq!(e.client_message_id, "nope-1");
    assert!(e.code == "NOT_FOUND" || e.code == "PERMISSION_DENIED", "{e:?}");
    a.send("", "nope-2", "where?").await;
    assert_eq!(a.error().await.code, "INVALID_ARGUMENT");
    a.ping(9).await;
}
}

both_transports! {
async fn logging_out_everywhere_ends_a_listen_stream() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mut a = Conn::listen(&alice, &[]).await;
    let id = a.stream_id().to_string();
    alice
        .auth()
        .logout(proto::LogoutRequest { refresh_token: String::new(), all_devices: true })
        .await
        .unwrap();
    let end = a.end_status().await.unwrap_err();
    assert_eq!(end.code(), Code::Unauthenticated, "{end:?}");
    // A fresh login may not reach the old stream either: it is gone.
    let login = edgechat::client::auth_client(s.channel().await, None)
        .login(proto::LoginRequest {
            username: "alice".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut chat = edgechat::client::chat_client(s.channel().await, Some(&login.access_token));
    let r = chat.send_frame(proto::SendFrameRequest { stream_id: id, frame: Some(ping(1)) }).await;
    expect_code(r, Code::NotFound);
}
}

/// The browser's path: `Listen` and `SendFrame` as gRPC-Web calls over HTTP/1.1 and TLS, the
/// stream's frames arriving as chunks of one response.
#[tokio::test]
async fn listen_and_send_frame_over_grpc_web() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let call = |path: &str, msg: Vec<u8>, token: &str| {
        let mut body = vec![0u8];
        body.extend((msg.len() as u32).to_be_bytes());
        body.extend(msg);
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\n\
             x-grpc-web: 1\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        [head.into_bytes(), body].concat()
    };
    let mut listen = s.raw_tls(b"http/1.1").await;
    let req = prost::Message::encode_to_vec(&proto::ListenRequest { subscriptions: vec![] });
    listen.write_all(&call("/edgechat.v1.ChatService/Listen", req, &alice.token)).await.unwrap();
    let mut frames = GrpcWebFrames::default();
    let first = frames.next(&mut listen).await;
    let Some(S::Listening(l)) = first.kind else { panic!("first frame: {first:?}") };
    // The frame goes in on another connection, as a browser's fetch would send it.
    let mut send = s.raw_tls(b"http/1.1").await;
    let req = proto::SendFrameRequest { stream_id: l.stream_id, frame: Some(ping(42)) };
    let req = prost::Message::encode_to_vec(&req);
    send.write_all(&call("/edgechat.v1.ChatService/SendFrame", req, &alice.token)).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, send.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let pong = frames.next(&mut listen).await;
    assert!(matches!(pong.kind, Some(S::Pong(p)) if p.nonce == 42), "{pong:?}");
}

/// Reads `ServerFrame`s from a gRPC-Web response over HTTP/1.1: the head, then chunks
/// carrying 5-byte-prefixed messages.
#[derive(Default)]
struct GrpcWebFrames {
    raw: Vec<u8>,
    head_done: bool,
    body: Vec<u8>,
}

impl GrpcWebFrames {
    async fn next(&mut self, conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> proto::ServerFrame {
        use tokio::io::AsyncReadExt;
        loop {
            self.dechunk();
            if self.body.len() >= 5 {
                let len = u32::from_be_bytes(self.body[1..5].try_into().unwrap()) as usize;
                if self.body.len() >= 5 + len {
                    assert_eq!(self.body[0], 0, "a data frame, not trailers: {:?}", self.body);
                    let msg: Vec<u8> = self.body.drain(..5 + len).skip(5).collect();
                    return prost::Message::decode(msg.as_slice()).unwrap();
                }
            }
            let mut buf = [0u8; 4096];
            let n =
                tokio::time::timeout(WAIT, conn.read(&mut buf)).await.expect("a frame").unwrap();
            assert!(n > 0, "the response ended: {:?}", String::from_utf8_lossy(&self.raw));
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// Moves whole chunks from `raw` to `body` (after the response head).
    fn dechunk(&mut self) {
        if !self.head_done {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
            self.raw.drain(..end + 4);
            self.head_done = true;
        }
        while let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..eol]).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }
}
