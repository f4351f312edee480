//! The TCP listener: mutual TLS modes, plain-text mode, health and reflection, and clients that
//! misbehave at the TLS or HTTP/2 level without disturbing others.

use std::time::Duration;

use edgechat::client::{self, TlsFiles};
use edgechat::proto;
use tokio::io::AsyncWriteExt;

use crate::support::{TestServer, WAIT};

async fn whoami_works(s: &TestServer, tls: &TlsFiles) -> Result<(), String> {
    let ch = client::connect(&s.url(), tls).await.map_err(|e| e.to_string())?;
    let mut c = client::auth_client(ch, None);
    c.register(proto::RegisterRequest {
        username: format!("user{}", rand_suffix()),
        password: "correct horse battery".into(),
        display_name: String::new(),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

both_transports! {
async fn client_auth_required_refuses_clients_without_a_certificate() {
    let s = TestServer::start_with(|c| c.tls.client_auth = "required".into()).await;
    assert!(whoami_works(&s, &s.tls()).await.is_err(), "no client certificate must be refused");
    whoami_works(&s, &s.tls_with_client_cert()).await.unwrap();
    // A certificate from another CA is refused too.
    let other = TestServer::start().await;
    let certs = other.data_dir().join("certs");
    let foreign = TlsFiles {
        ca: Some(s.ca()),
        client_cert: Some((certs.join("client.pem"), certs.join("client.key"))),
    };
    assert!(
        whoami_works(&s, &foreign).await.is_err(),
        "a foreign client certificate must be refused"
    );
}
}

both_transports! {
async fn client_auth_optional_accepts_both() {
    let s = TestServer::start_with(|c| c.tls.client_auth = "optional".into()).await;
    whoami_works(&s, &s.tls()).await.unwrap();
    whoami_works(&s, &s.tls_with_client_cert()).await.unwrap();
}
}

#[tokio::test]
async fn plaintext_mode_serves_h2c() {
    let s = TestServer::start_with(|c| c.tls.insecure_plaintext = true).await;
    whoami_works(&s, &TlsFiles::default()).await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer() {
    let s = TestServer::start().await;
    let ch = s.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap();
    assert_eq!(
        r.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn silent_truncated_and_garbage_clients_do_not_disturb_others() {
    let s = TestServer::start_with(|c| c.limits.tls_handshake_timeout_secs = 1).await;
    // Connects and says nothing.
    let silent = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Starts a TLS ClientHello and stops halfway.
    let mut truncated = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    truncated
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
        .await
        .unwrap();
    // Sends garbage and hangs up.
    let mut garbage = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02").await.unwrap();
    drop(garbage);
    // Everyone else is served meanwhile.
    tokio::time::timeout(WAIT, whoami_works(&s, &s.tls())).await.unwrap().unwrap();
    // The silent client is closed after the handshake timeout.
    let mut buf = [0u8; 1];
    let mut silent = silent;
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut silent, &mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "silent client should be closed, got {n:?}");
    drop(truncated);
    tokio::time::sleep(Duration::from_millis(10)).await;
    whoami_works(&s, &s.tls()).await.unwrap();
}

both_transports! {
    async fn bind_client_cert_ties_tokens_to_the_devices_key() {
        let s = TestServer::start_with(|c| {
            c.tls.client_auth = "optional".into();
            c.tls.bind_client_cert = true;
        })
        .await;
        let alice = s.register("alice").await;
        s.register("bob").await;
        let issue = |name: &str| {
            let (pem, key) = edgechat::init::issue_client_cert(&s.data_dir(), name).unwrap();
            TlsFiles { ca: Some(s.ca()), client_cert: Some((pem, key)) }
        };
        let whoami = |tls: TlsFiles| {
            let url = s.url();
            let token = alice.access_token.clone();
            async move {
                let ch = client::connect(&url, &tls).await.unwrap();
                client::auth_client(ch, Some(&token)).who_am_i(proto::WhoAmIRequest {}).await
            }
        };
        whoami(issue("alice")).await.unwrap();
        let m = crate::support::expect_code(whoami(issue("bob")).await, tonic::Code::Unauthenticated);
        assert!(m.contains("another user"), "{m}");
        crate::support::expect_code(whoami(s.tls()).await, tonic::Code::Unauthenticated);
    }
}

mod h3_only {
    use std::collections::BTreeSet;

    use edgechat::proto::{client_frame::Kind as C, server_frame::Kind as S};

    use super::*;
    use crate::support::{Transport, fast_server, room_with, send_rpc};

    async fn next_events(n: usize, inbound: &mut tonic::Streaming<proto::ServerFrame>) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let f = tokio::time::timeout(WAIT, inbound.message()).await.unwrap().unwrap().unwrap();
            if let Some(S::Event(e)) = f.kind {
                seqs.push(e.seq);
            }
        }
        seqs
    }

    async fn h3_server() -> TestServer {
        crate::support::TRANSPORT.scope(Transport::H3, fast_server()).await
    }

    #[tokio::test]
    async fn a_connect_stream_survives_a_network_change() {
        let s = h3_server().await;
        let alice = s.user("alice").await;
        let bob = s.user("bob").await;
        let room = room_with(&alice, &[&bob]).await;
        let (ch, endpoint) = client::connect_h3(&s.url(), &s.tls()).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut inbound = client::chat_client(ch.clone(), Some(&bob.token))
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let frame = |k| proto::ClientFrame { kind: Some(k) };
        tx.send(frame(C::Subscribe(proto::Subscribe { room_id: room.clone(), after_seq: None })))
            .await
            .unwrap();
        let mut seqs = BTreeSet::new();
        for i in 0..10 {
            send_rpc(&alice, &room, &format!("a{i}"), "before the move").await.unwrap();
        }
        for seq in next_events(10, &mut inbound).await {
            assert!(seqs.insert(seq));
        }
        let old = endpoint.local_addr().unwrap();
        let new = edgechat::transport::h3::rebind_client(&endpoint).unwrap();
        assert_ne!(old.port(), new.port());
        for i in 0..10 {
            send_rpc(&alice, &room, &format!("b{i}"), "after the move").await.unwrap();
        }
        for seq in next_events(10, &mut inbound).await {
            assert!(seqs.insert(seq), "duplicate {seq}");
        }
        // Requests from the moved socket work too, on the same connection.
        tx.send(frame(C::Ping(proto::Ping { nonce: 9 }))).await.unwrap();
        assert_eq!(seqs.into_iter().collect::<Vec<_>>(), (3..=22).collect::<Vec<_>>());
        drop(ch);
    }

    #[tokio::test]
    async fn garbage_datagrams_and_a_wrong_alpn_do_not_disturb_others() {
        let s = h3_server().await;
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for n in [1usize, 20, 1200, 1500] {
            junk.send_to(&vec![0xab; n], s.addr).unwrap();
        }
        // A QUIC client offering only "h2" is refused in the handshake.
        let roots = edgechat::transport::tls::load_roots(&s.ca()).unwrap();
        let mut tls =
            rustls::ClientConfig::builder_with_provider(edgechat::transport::tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let cfg = quinn::ClientConfig::new(std::sync::Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
        ));
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(cfg);
        let conn =
            tokio::time::timeout(WAIT, ep.connect(s.addr, "localhost").unwrap()).await.unwrap();
        assert!(conn.is_err(), "a non-h3 ALPN must be refused");
        // Everyone else is served.
        s.user("alice").await;
    }
}

/// A client certificate from the data directory's own CA whose validity ended yesterday.
fn expired_client_cert(s: &TestServer) -> TlsFiles {
    let certs = s.data_dir().join("certs");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "expired");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (pem, keyf) = (s.dir.path().join("expired.pem"), s.dir.path().join("expired.key"));
    std::fs::write(&pem, cert.pem()).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    TlsFiles { ca: Some(s.ca()), client_cert: Some((pem, keyf)) }
}

both_transports! {
    async fn an_expired_client_certificate_is_refused() {
        let s = TestServer::start_with(|c| c.tls.client_auth = "required".into()).await;
        assert!(whoami_works(&s, &expired_client_cert(&s)).await.is_err());
        whoami_works(&s, &s.tls_with_client_cert()).await.unwrap();
    }
}

#[tokio::test]
async fn grpc_web_over_http1_on_the_tcp_listener() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start().await;
    // A browser-style gRPC-Web call: HTTP/1.1 over TLS, the status in a trailer frame.
    let mut tls = s.raw_tls(b"http/1.1").await;
    let msg = prost::Message::encode_to_vec(&proto::RegisterRequest {
        username: "webuser".into(),
        password: "correct horse battery".into(),
        display_name: String::new(),
        ..Default::default()
    });
    let mut body = vec![0u8];
    body.extend((msg.len() as u32).to_be_bytes());
    body.extend(msg);
    let head = format!(
        "POST /edgechat.v1.AuthService/Register HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
    assert!(text.contains("webuser"));
}

/// The web page on the gRPC port, as a browser asks for it (HTTP/1.1 over TLS), with its
/// security and cache headers; an unknown gRPC service is still a gRPC answer.
#[tokio::test]
async fn the_web_page_is_served_beside_grpc() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let get = |path: &str, extra: &'static str| {
        let path = path.to_string();
        let s = &s;
        async move {
            let mut tls = s.raw_tls(b"http/1.1").await;
            let head = format!(
                "GET {path} HTTP/1.1\r\nhost: localhost\r\n{extra}connection: close\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await.unwrap();
            String::from_utf8_lossy(&response).to_ascii_lowercase()
        }
    };
    let page = get("/", "").await;
    assert!(page.starts_with("http/1.1 200"), "{page}");
    for header in [
        "content-type: text/html; charset=utf-8",
        "cache-control: no-cache",
        "x-content-type-options: nosniff",
        "content-security-policy: default-src 'none'; script-src 'self';",
        "etag: \"",
    ] {
        assert!(page.contains(header), "{header} in {page}");
    }
    assert!(page.contains("<html"), "{page}");
    // The bundle's stylesheet, by the hashed name the page links.
    let href = page.split("href=\"").nth(1).and_then(|r| r.split('"').next()).expect("a link");
    assert!(href.starts_with("assets/") && href.ends_with(".css"), "{href}");
    let css = get(&format!("/{href}"), "").await;
    assert!(css.starts_with("http/1.1 200"), "{css}");
    assert!(css.contains("cache-control: public, max-age=31536000, immutable"), "{css}");
    assert!(css.contains("content-type: text/css"), "{css}");
    let missing = get("/no/such/file", "").await;
    assert!(missing.starts_with("http/1.1 404") && missing.contains("nosniff"), "{missing}");
    // gRPC on the same port: an unknown service is UNIMPLEMENTED, not a web page.
    let r = crate::support::raw_call(s.channel().await, "/no.such.Service/Method", vec![], None);
    assert_eq!(r.await.unwrap_err().code(), tonic::Code::Unimplemented);
}
