//! `/metrics` on its own address, as Prometheus (or curl) reads it, changing under load.

use edgechat::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Conn, TestServer, room_with, send_rpc};

/// `GET path` over plain HTTP/1.1; the status line and the body.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all).await.unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The value of the first sample whose line starts with `series` (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_change_under_load() {
    let s = TestServer::start_with(|c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
    })
    .await;
    let addr = s.metrics_addr().expect("metrics are on");
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let mut b = Conn::open(&bob).await;
    b.subscribe(&room, None).await;
    let (status, before) = get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for i in 0..20 {
        send_rpc(&alice, &room, &format!("m{i}"), "counted").await.unwrap();
    }
    for _ in 0..20 {
        b.event().await;
    }
    // A refused token counts as an auth failure.
    let mut bad = edgechat::client::auth_client(s.channel().await, Some("not.a.token"));
    assert!(bad.who_am_i(proto::WhoAmIRequest {}).await.is_err());
    let (_, after) = get(addr, "/metrics").await;
    // Counters are process-wide (other tests add to them too): they only grow.
    for (series, at_least) in [
        ("edgechat_messages_committed_total", 20.0),
        ("edgechat_commits_total", 1.0),
        ("edgechat_fanout_deliveries_total", 20.0),
        ("edgechat_rpc_total{method=\"/edgechat.v1.ChatService/SendMessage\",code=\"OK\"}", 20.0),
        ("edgechat_auth_failures_total{reason=\"invalid\"}", 1.0),
    ] {
        let grew = value(&after, series) - value(&before, series);
        assert!(grew >= at_least, "{series} grew by {grew}:\n{after}");
    }
    for gauge in ["edgechat_connections_open", "edgechat_streams_open", "edgechat_database_bytes"] {
        assert!(value(&after, gauge) >= 1.0, "{gauge}:\n{after}");
    }
    assert!(after.contains("edgechat_commit_seconds_bucket"), "a latency histogram");
    assert!(after.contains("edgechat_rpc_seconds_bucket"));
    // Batch sizes are counts: their buckets are whole numbers of jobs, not seconds.
    assert!(after.contains("edgechat_commit_batch_size_bucket{le=\"1024\"}"), "{after}");
    assert!(!after.contains("edgechat_commit_batch_size_bucket{le=\"0.5\"}"), "{after}");
    let (status, _) = get(addr, "/other").await;
    assert!(status.contains("404"), "{status}");
}

both_transports!(metrics_change_under_load);
