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
