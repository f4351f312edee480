//! Attachments end to end (issue 19): resumable uploads checked against their size and hash,
//! messages carrying them, downloads by members only (the permission rows: readers, read-only
//! rooms, outsiders, the banned, those who left, private and direct rooms, a global admin
//! outside the room), download links and what a browser is told, collection of what no
//! message carries, and backups holding the bytes.

use std::time::Duration;

use edgechat::client::{self, Authed};
use edgechat::proto::{self, attachment_service_client::AttachmentServiceClient};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::support::{
    TestServer, User, ban, create_room, expect_code, history, room_with, set_role,
};

fn files(u: &User) -> AttachmentServiceClient<Authed> {
    client::attachments_client(u.ch.clone(), Some(&u.token))
}

/// A PNG of `w` x `h` pixels as far as its header says, padded to `len` bytes.
fn png(w: u32, h: u32, len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 2, 0, 0, 0]);
    b.extend((b.len()..len).map(|i| (i * 7 % 251) as u8));
    b
}

async fn upload(u: &User, name: &str, bytes: &[u8]) -> proto::Attachment {
    client::upload(&mut files(u), name, bytes).await.expect("upload")
}

async fn post(
    u: &User,
    room: &str,
    cmid: &str,
    ids: &[&str],
) -> Result<proto::Message, tonic::Status> {
    u.chat()
        .send_message(proto::SendMessageRequest {
            room_id: room.into(),
            client_message_id: cmid.into(),
            text: String::new(),
            attachment_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn get(u: &User, id: &str) -> Result<proto::AttachmentAccess, tonic::Status> {
    files(u)
        .get_attachment(proto::GetAttachmentRequest { attachment_id: id.into() })
        .await
        .map(|r| r.into_inner())
}

async fn download(u: &User, id: &str) -> Result<Vec<u8>, tonic::Status> {
    client::download(&mut files(u), id).await
}

fn start_req(name: &str, bytes: &[u8]) -> proto::StartUploadRequest {
    proto::StartUploadRequest {
        name: name.into(),
        size: bytes.len() as u64,
        sha256: sha2::Sha256::digest(bytes).to_vec(),
    }
}

async fn chunk(
    u: &User,
    id: &str,
    offset: u64,
    data: &[u8],
) -> Result<proto::Upload, tonic::Status> {
    files(u)
        .upload_chunk(proto::UploadChunkRequest {
            upload_id: id.into(),
            offset,
            data: data.to_vec(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn get_upload(u: &User, id: &str) -> Result<proto::Upload, tonic::Status> {
    files(u)
        .get_upload(proto::GetUploadRequest { upload_id: id.into() })
        .await
        .map(|r| r.into_inner())
}

both_transports! {
async fn an_upload_posted_in_a_room_is_downloaded_by_its_members() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    // 600 KiB: three chunks.
    let bytes = png(640, 480, 600 << 10);
    let a = upload(&alice, "cat.png", &bytes).await;
    assert_eq!((a.name.as_str(), a.size, a.media_type.as_str()), ("cat.png", bytes.len() as u64, "image/png"));
    assert_eq!((a.width, a.height), (640, 480));
    assert_eq!(a.sha256, sha2::Sha256::digest(&bytes).to_vec());
    assert_eq!(a.uploader_id, alice.id);
    // Not posted yet: only its uploader sees it.
    assert_eq!(download(&alice, &a.id).await.unwrap(), bytes);
    expect_code(get(&bob, &a.id).await, Code::NotFound);

    // A file without a caption.
    let m = post(&alice, &room, "f1", &[&a.id]).await.unwrap();
    assert_eq!(m.attachments, std::slice::from_ref(&a));
    let h = history(&bob, &room, 0, 0, 10).await.unwrap();
    let shown = h.events.iter().find_map(|e| match &e.kind {
        Some(proto::room_event::Kind::Message(m)) if m.seq == e.seq && !m.attachments.is_empty() => Some(m),
        _ => None,
    });
    assert_eq!(shown.expect("the message in history").attachments, std::slice::from_ref(&a));
    assert_eq!(download(&bob, &a.id).await.unwrap(), bytes);
    let access = get(&bob, &a.id).await.unwrap();
    assert_eq!(access.attachment.as_ref(), Some(&a));
    assert!(access.download_path.starts_with(&format!("/attachments/{}?t=", a.id)));

    // A download resumes from an offset.
    let mut rest = Vec::new();
    let mut stream = files(&bob)
        .download(proto::DownloadRequest { attachment_id: a.id.clone(), offset: 300_000 })
        .await
        .unwrap()
        .into_inner();
    while let Some(c) = stream.message().await.unwrap() {
        assert_eq!(c.offset, 300_000 + rest.len() as u64);
        rest.extend_from_slice(&c.data);
    }
    assert_eq!(rest, bytes[300_000..]);

    // The same content uploaded again is stored once and is its own attachment.
    let again = upload(&bob, "copy.png", &bytes).await;
    assert_ne!(again.id, a.id);
    assert_eq!(download(&bob, &again.id).await.unwrap(), bytes);
}

async fn who_may_see_an_attachment() {
    let s = TestServer::start_unthrottled().await;
    let owner = s.user("owner").await;
    let member = s.user("member").await;
    let reader = s.user("reader").await;
    let leaver = s.user("leaver").await;
    let banned = s.user("banned").await;
    let outsider = s.user("outsider").await;
    let root = s.admin("root").await;
    let room = room_with(&owner, &[&member, &reader, &leaver, &banned]).await;
    set_role(&owner, &room, &reader, proto::RoomRole::Reader).await;
    let a = upload(&owner, "notes.txt", b"minutes of the meeting").await;
    assert_eq!(a.media_type, "text/plain");
    post(&owner, &room, "m1", &[&a.id]).await.unwrap();
    leaver.rooms().leave_room(proto::LeaveRoomRequest { room_id: room.clone() }).await.unwrap();
    ban(&owner, &room, &banned, "spam").await;
    for u in [&owner, &member, &reader] {
        assert_eq!(download(u, &a.id).await.unwrap(), b"minutes of the meeting", "{}", u.name);
        get(u, &a.id).await.unwrap();
    }
    // Whoever is not a member now, the global admin outside the room included, is told that
    // there is no such attachment, exactly as for an id that never existed.
    for u in [&leaver, &banned, &outsider, &root] {
        let m = expect_code(get(u, &a.id).await, Code::NotFound);
        assert_eq!(m, expect_code(get(u, "f0000nothing").await, Code::NotFound), "{}", u.name);
        expect_code(download(u, &a.id).await, Code::NotFound);
    }

    // Posting needs the right to post: not a reader, not a member of a read-only room.
    let b = upload(&reader, "r.txt", b"from a reader").await;
    expect_code(post(&reader, &room, "r1", &[&b.id]).await, Code::PermissionDenied);
    let ro = create_room(&owner, "news", proto::Visibility::Public).await.id;
    member.rooms().join_room(proto::JoinRoomRequest { room_id: ro.clone() }).await.unwrap();
    owner
        .rooms()
        .update_room(proto::UpdateRoomRequest { room_id: ro.clone(), read_only: Some(true), ..Default::default() })
        .await
        .unwrap();
    let c = upload(&member, "m.txt", b"from a member").await;
    expect_code(post(&member, &ro, "ro1", &[&c.id]).await, Code::PermissionDenied);
    // ... and one's own uploads: someone else's id is not found, even one the poster may see.
    expect_code(post(&member, &room, "x1", &[&a.id]).await, Code::NotFound);
    expect_code(post(&owner, &room, "x2", &[&b.id]).await, Code::NotFound);
    get(&member, &c.id).await.unwrap();

    // A private room's attachment: its members only; a direct room's: its two users only.
    let private = create_room(&owner, "inner", proto::Visibility::Private).await.id;
    let p = upload(&owner, "plan.txt", b"the plan").await;
    post(&owner, &private, "p1", &[&p.id]).await.unwrap();
    for u in [&member, &outsider, &root] {
        expect_code(get(u, &p.id).await, Code::NotFound);
    }
    let direct = owner
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: member.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let d = upload(&owner, "dm.txt", b"just for you").await;
    post(&owner, &direct, "d1", &[&d.id]).await.unwrap();
    assert_eq!(download(&member, &d.id).await.unwrap(), b"just for you");
    // A file sent without a word is notified by its name.
    let n = member
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 100 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(n.iter().any(|n| n.text == "📎 dm.txt"), "{n:?}");
    for u in [&reader, &outsider, &root] {
        expect_code(get(u, &d.id).await, Code::NotFound);
    }

    // Deleting the message takes the attachment away from the room (its uploader keeps it
    // until it is collected).
    let e = upload(&owner, "e.txt", b"to be deleted").await;
    let sent = post(&owner, &room, "m3", &[&e.id]).await.unwrap();
    assert_eq!(download(&member, &e.id).await.unwrap(), b"to be deleted");
    owner
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: sent.seq })
        .await
        .unwrap();
    expect_code(get(&member, &e.id).await, Code::NotFound);
    get(&owner, &e.id).await.unwrap();
    let h = history(&member, &room, 0, 0, 100).await.unwrap();
    for ev in &h.events {
        if let Some(proto::room_event::Kind::Message(m)) = &ev.kind
            && m.seq == sent.seq
        {
            assert!(m.deleted && m.attachments.is_empty(), "a tombstone carries no files");
        }
    }
}

async fn bad_uploads_are_refused_and_leave_nothing_behind() {
    let s = TestServer::start_with(|c| {
        c.attachments.max_bytes = 1 << 20;
        c.attachments.per_user_bytes = 3 << 20;
    })
    .await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    let mut f = files(&alice);

    // Declarations.
    let too_big = proto::StartUploadRequest { size: (1 << 20) + 1, ..start_req("big.bin", &bytes) };
    let m = expect_code(f.start_upload(too_big).await, Code::ResourceExhausted);
    assert!(m.contains("1048576"), "{m}");
    expect_code(f.start_upload(proto::StartUploadRequest { size: 0, ..start_req("e", &bytes) }).await, Code::InvalidArgument);
    let short_hash = proto::StartUploadRequest { sha256: vec![0; 31], ..start_req("h", &bytes) };
    expect_code(f.start_upload(short_hash).await, Code::InvalidArgument);
    for name in ["", "a/b", "..", "x\u{202E}gpj.exe", &"n".repeat(256)] {
        expect_code(f.start_upload(start_req(name, &bytes)).await, Code::InvalidArgument);
    }

    // Chunks out of order, past the end, too large; retries are harmless.
    let up = f.start_upload(start_req("data.bin", &bytes)).await.unwrap().into_inner();
    assert_eq!((up.received, up.attachment), (0, None));
    assert!(up.expires_at_ms > 0);
    let m = expect_code(chunk(&alice, &up.upload_id, 10, &bytes[10..20]).await, Code::FailedPrecondition);
    assert!(m.contains("offset 0"), "{m}");
    let big = vec![0u8; (256 << 10) + 1];
    expect_code(chunk(&alice, &up.upload_id, 0, &big).await, Code::InvalidArgument);
    // Far larger: past the service's message limit (64 KiB + 256 KiB), refused undecoded.
    expect_code(chunk(&alice, &up.upload_id, 0, &[0; 400_000]).await, Code::ResourceExhausted);
    expect_code(chunk(&alice, &up.upload_id, 0, &[]).await, Code::InvalidArgument);
    let first = chunk(&alice, &up.upload_id, 0, &bytes[..200_000]).await.unwrap();
    assert_eq!(first.received, 200_000);
    assert_eq!(chunk(&alice, &up.upload_id, 0, &bytes[..200_000]).await.unwrap(), first, "a retry");
    // Overlapping what is stored: only the new bytes count.
    let grown = chunk(&alice, &up.upload_id, 100_000, &bytes[100_000..300_000]).await.unwrap();
    assert_eq!(grown.received, 300_000);
    chunk(&alice, &up.upload_id, 300_000, &bytes[300_000..450_000]).await.unwrap();
    let past = [&bytes[450_000..], &[1, 2, 3][..]].concat();
    expect_code(chunk(&alice, &up.upload_id, 450_000, &past).await, Code::InvalidArgument);
    // Someone else's upload does not exist for them.
    let bob = s.user("bob").await;
    expect_code(chunk(&bob, &up.upload_id, 450_000, &bytes[450_000..500_000]).await, Code::NotFound);
    expect_code(get_upload(&bob, &up.upload_id).await, Code::NotFound);
    // Not finished: it cannot be attached.
    let m = expect_code(post(&alice, &room, "early", &[&up.upload_id]).await, Code::FailedPrecondition);
    assert!(m.contains("450000 of 700000"), "{m}");
    // Asking to start the same file again answers the same upload, where it stands.
    let same = f.start_upload(start_req("data.bin", &bytes)).await.unwrap().into_inner();
    assert_eq!((same.upload_id.as_str(), same.received), (up.upload_id.as_str(), 450_000));

    // A file that is not the one declared is dropped whole on its last chunk.
    let mut lie = bytes.clone();
    lie[5] ^= 1;
    let liar = f.start_upload(start_req("lie.bin", &bytes)).await.unwrap().into_inner();
    chunk(&alice, &liar.upload_id, 0, &lie[..250_000]).await.unwrap();
    chunk(&alice, &liar.upload_id, 250_000, &lie[250_000..500_000]).await.unwrap();
    let m = expect_code(chunk(&alice, &liar.upload_id, 500_000, &lie[500_000..]).await, Code::InvalidArgument);
    assert!(m.contains("SHA-256"), "{m}");
    expect_code(get_upload(&alice, &liar.upload_id).await, Code::NotFound);
    expect_code(post(&alice, &room, "lie", &[&liar.upload_id]).await, Code::NotFound);

    // Too many at once: 8 unfinished uploads, then RESOURCE_EXHAUSTED (the quota first here:
    // 3 MiB is four of these).
    let mut open = vec![same.upload_id.clone()];
    for i in 0..3 {
        let other: Vec<u8> = bytes.iter().map(|b| b ^ (i + 1)).collect();
        open.push(f.start_upload(start_req(&format!("o{i}"), &other)).await.unwrap().into_inner().upload_id);
    }
    let m = expect_code(f.start_upload(start_req("more", &[9; 700_000])).await, Code::ResourceExhausted);
    assert!(m.contains("3145728"), "{m}");
    let small: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
    for (i, b) in small.iter().take(4).enumerate() {
        f.start_upload(start_req(&format!("s{i}"), b)).await.unwrap();
    }
    let m = expect_code(f.start_upload(start_req("s4", &small[4])).await, Code::ResourceExhausted);
    assert!(m.contains("8 unfinished"), "{m}");

    // The interrupted upload goes on where it stopped, across a restart of the server too:
    // every acknowledged chunk was durable.
    let mut s = s;
    s.restart().await;
    let alice = User { ch: s.channel().await, ..alice };
    let now = get_upload(&alice, &up.upload_id).await.unwrap();
    assert_eq!(now.received, 450_000);
    let done = chunk(&alice, &up.upload_id, 450_000, &bytes[450_000..]).await.unwrap();
    let a = done.attachment.expect("finished");
    assert_eq!(a.media_type, "application/octet-stream");
    // The last chunk again (its answer lost): the same attachment.
    let again = chunk(&alice, &up.upload_id, 450_000, &bytes[450_000..]).await.unwrap();
    assert_eq!(again.attachment, Some(a.clone()));
    // Eleven attachments, or one twice, are too many.
    let ids: Vec<&str> = std::iter::repeat_n(a.id.as_str(), 11).collect();
    expect_code(post(&alice, &room, "many", &ids).await, Code::InvalidArgument);
    expect_code(post(&alice, &room, "twice", &[&a.id, &a.id]).await, Code::InvalidArgument);
    let m = post(&alice, &room, "ok", &[&a.id]).await.unwrap();
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(download(&alice, &a.id).await.unwrap(), bytes);
}
}

/// What no message carries is collected once idle long enough; what a message carries stays
/// until its last message is deleted. (The background job runs `prune_once` every second
/// with `[attachments] unposted_secs`; here it is run by hand with 0.)
#[tokio::test]
async fn uploads_no_message_carries_are_collected() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let posted = upload(&alice, "kept.txt", b"kept").await;
    let m = post(&alice, &room, "k", &[&posted.id]).await.unwrap();
    let idle = upload(&alice, "idle.txt", b"idle").await;
    let half = files(&alice).start_upload(start_req("half.txt", b"half of it")).await.unwrap();
    let half = half.into_inner().upload_id;
    chunk(&alice, &half, 0, b"half").await.unwrap();
    let collect = || async {
        let exec = s.api().messages.exec().clone();
        let rules = edgechat::retention::Rules::default();
        let cursors = edgechat::retention::Cursors::default();
        let now = edgechat::clock::now_ms() + 1;
        edgechat::retention::prune_once(&exec, rules, Duration::ZERO, cursors, now).await.unwrap();
    };
    collect().await;
    expect_code(get(&alice, &idle.id).await, Code::NotFound);
    expect_code(get_upload(&alice, &half).await, Code::NotFound);
    assert_eq!(download(&alice, &posted.id).await.unwrap(), b"kept");
    alice
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: m.seq })
        .await
        .unwrap();
    collect().await;
    expect_code(get(&alice, &posted.id).await, Code::NotFound);
    // With everything gone, the quota is whole again.
    let usage = s.api().messages.store().read().unwrap();
    assert_eq!(edgechat::store::attachments::usage(&usage, &alice.id).unwrap(), 0);
}

/// A plain HTTP/1.1 GET of `path` over TLS; the status line, headers and body.
async fn http_get(s: &TestServer, path: &str) -> (String, String, Vec<u8>) {
    http(s, "GET", path).await
}

/// A plain HTTP/1.1 request over TLS; the status line, headers (lowercased) and body.
async fn http(s: &TestServer, method: &str, path: &str) -> (String, String, Vec<u8>) {
    let mut tls = s.raw_tls(b"http/1.1").await;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.ok();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (status.to_string(), headers.to_lowercase(), raw[split + 4..].to_vec())
}

/// Download links: a browser gets the bytes without a token, images inline and everything
/// else as a download, never as a page that could run; a link is refused once expired,
/// altered, or its user may no longer see the file.
#[tokio::test]
async fn download_links_serve_browsers_safely() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let image = png(2, 3, 5000);
    let img = upload(&alice, "pic.png", &image).await;
    let page = b"<html><script>alert(document.cookie)</script></html>";
    // Named and shaped like a page, and like an image: served as neither.
    let html = upload(&alice, "evil.html", page).await;
    let fake = upload(&alice, "fake.png", page).await;
    assert_eq!(fake.media_type, "application/octet-stream");
    post(&alice, &room, "p", &[&img.id, &html.id, &fake.id]).await.unwrap();

    let link = get(&bob, &img.id).await.unwrap().download_path;
    let (status, headers, body) = http_get(&s, &link).await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: image/png"), "{headers}");
    assert!(headers.contains("content-disposition: inline;"), "{headers}");
    assert!(headers.contains("x-content-type-options: nosniff"), "{headers}");
    assert!(headers.contains("sandbox"), "{headers}");
    assert_eq!(body, image);
    for a in [&html, &fake] {
        let (status, headers, body) =
            http_get(&s, &get(&bob, &a.id).await.unwrap().download_path).await;
        assert!(status.contains("200"), "{status}");
        assert!(headers.contains("content-type: application/octet-stream"), "{headers}");
        assert!(headers.contains("content-disposition: attachment;"), "{headers}");
        assert_eq!(body, page);
    }
    // HEAD says what GET would send, without it; anything else is refused.
    let (status, headers, body) = http(&s, "HEAD", &link).await;
    assert!(status.contains("200") && body.is_empty(), "{status}");
    assert!(headers.contains(&format!("content-length: {}", image.len())), "{headers}");
    let (status, headers, _) = http(&s, "POST", &link).await;
    assert!(status.contains("405") && headers.contains("allow: get, head"), "{status} {headers}");
    // Altered: another file with the same token, a later expiry, no token.
    let t = link.split_once("?t=").unwrap().1;
    let other = format!("/attachments/{}?t={t}", html.id);
    let (user, rest) = t.split_once('.').unwrap();
    let (_, mac) = rest.split_once('.').unwrap();
    let later = format!("/attachments/{}?t={user}.{}.{mac}", img.id, i64::MAX);
    for bad in [other, later, format!("/attachments/{}", img.id)] {
        let (status, _, _) = http_get(&s, &bad).await;
        assert!(status.contains("404"), "{bad}: {status}");
    }
    // Bob banned: his link stops working at once.
    ban(&alice, &room, &bob, "gone").await;
    let (status, _, _) = http_get(&s, &link).await;
    assert!(status.contains("404"), "{status}");
    // Alice logs out everywhere: hers too (a link is bound to the token version it was given at).
    let hers = get(&alice, &img.id).await.unwrap().download_path;
    assert!(http_get(&s, &hers).await.0.contains("200"));
    let out = proto::LogoutRequest { refresh_token: String::new(), all_devices: true };
    alice.auth().logout(out).await.unwrap();
    let (status, _, _) = http_get(&s, &hers).await;
    assert!(status.contains("404"), "{status}");
}

/// A backup holds the attachments' bytes: restored, the file downloads as it was.
#[tokio::test]
async fn a_backup_holds_the_attachments() {
    let mut s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let bytes = png(10, 10, 300_000);
    let a = upload(&alice, "kept.png", &bytes).await;
    post(&alice, &room, "k", &[&a.id]).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("backup.redb");
    s.api().messages.store().snapshot_to(&out).unwrap();
    // `edgechat check` reads the files too: every piece there, hashing to its content.
    let check =
        crate::support::edgechat_bin().args(["check", "--file"]).arg(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    s.stop().await;
    std::fs::copy(&out, s.data_dir().join(edgechat::store::DB_FILE_NAME)).unwrap();
    s.restart().await;
    let login =
        proto::LoginRequest { username: "alice".into(), password: "correct horse battery".into() };
    let ch = s.channel().await;
    let token =
        client::auth_client(ch.clone(), None).login(login).await.unwrap().into_inner().access_token;
    let alice = User { token, ch, ..alice };
    assert_eq!(download(&alice, &a.id).await.unwrap(), bytes);
}

/// Starting an upload spends the per-user budget every change but a send spends, so a client
/// cannot make the server write without bound by uploading files that fail their hash (each
/// deleted at once, freeing its quota).
#[tokio::test]
async fn starting_uploads_spends_the_action_budget() {
    let s = TestServer::start_with(|c| {
        c.limits.action_burst = 3;
        c.limits.action_rate_per_sec = 0.1;
    })
    .await;
    let alice = s.user("alice").await;
    let mut f = files(&alice);
    for i in 0..3u8 {
        f.start_upload(start_req(&format!("f{i}"), &[i; 10])).await.unwrap();
    }
    let m = expect_code(f.start_upload(start_req("f3", &[3; 10])).await, Code::ResourceExhausted);
    assert!(m.contains("retry"), "{m}");
}
