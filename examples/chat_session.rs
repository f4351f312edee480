//! The README's client-library example, compiled so it stays true:
//! `cargo run --example chat_session -- ROOM_ID` against a local `edgechat serve`.

use edgechat::client::TlsFiles;
use edgechat::client::session::{ChatSession, Client, SessionEvent};
use edgechat::proto::{room_event::Kind as E, server_frame::Kind as S};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let room = std::env::args().nth(1).expect("room id"); // $ROOM from the tour
    let tls = TlsFiles { ca: Some("data/certs/ca.pem".into()), client_cert: None };
    let client = Client::new("h3://localhost:7443", tls); // or "https://localhost:7443"
    client.login("alice", "correct horse").await?;

    let mut session = ChatSession::start(client);
    session.subscribe(&room, Some(0)); // replay from the start, then live
    let id = session.send(&room, "hello from Rust"); // re-sent with this id until acked
    while let Some(event) = session.next().await {
        match event {
            SessionEvent::Frame(S::Event(e)) => {
                if let Some(E::Message(m)) = e.kind {
                    println!("#{} {}: {}", e.seq, m.sender_id, m.text);
                }
            }
            SessionEvent::Frame(S::SendAck(a)) if a.client_message_id == id => {
                println!("stored at seq {}", a.seq);
            }
            SessionEvent::Disconnected { error, retry_in } => {
                eprintln!("{error}; retrying in {retry_in:?}");
            }
            _ => {}
        }
    }
    Ok(())
}
