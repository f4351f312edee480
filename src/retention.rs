//! Background pruning of what the server must not keep forever: idempotency records older
//! than their 24-hour window (API.md keeps them at least that long) and refresh tokens past
//! their expiry. One small writer job a second, each looking at a bounded slice of a table
//! from where the last stopped, so no job holds the writer for long however large the tables.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, Writer, sent, users};

/// Records looked at per job and table.
const SLICE: usize = 2_000;
/// Time between jobs.
const EVERY: Duration = Duration::from_secs(1);

/// Where each table's pass has got to.
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    sent: Option<(String, String)>,
    refresh: Option<Vec<u8>>,
}

/// Runs one slice of pruning at `now_ms`; returns (records deleted, the cursors to go on from).
pub async fn prune_once(
    writer: &Writer,
    cursors: Cursors,
    now_ms: i64,
) -> Result<(u64, Cursors), StoreError> {
    writer
        .write(move |ctx| {
            let (a, sent) = sent::prune(ctx, cursors.sent, now_ms - sent::KEEP_MS, SLICE)?;
            let (b, refresh) = users::prune_refresh_tokens(ctx, cursors.refresh, now_ms, SLICE)?;
            Ok(Ok::<_, StoreError>((a + b, Cursors { sent, refresh })))
        })
        .await
}

/// Prunes a slice every second until `stop`.
pub async fn run(writer: Writer, stop: CancellationToken) {
    let mut cursors = Cursors::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = stop.cancelled() => return,
        }
        match prune_once(&writer, cursors.clone(), crate::clock::now_ms()).await {
            Ok((deleted, next)) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "pruned old idempotency records and refresh tokens");
                }
                cursors = next;
            }
            Err(e) => tracing::warn!(error = %e, "pruning failed; trying again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RefreshRecord, SentRecord, Store};

    #[tokio::test]
    async fn old_records_go_in_slices_and_recent_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let now = 100 * sent::KEEP_MS;
        writer
            .write(move |ctx| {
                for i in 0..5000 {
                    // Every other record is older than the window.
                    let at_ms = if i % 2 == 0 { now - sent::KEEP_MS - 1 } else { now - 1000 };
                    let rec = SentRecord { room_id: "r".into(), seq: i, at_ms };
                    sent::put(ctx, "u", &format!("c{i:05}"), &rec)?;
                }
                for i in 0..10u8 {
                    let rec = RefreshRecord {
                        expires_at_ms: if i < 4 { now - 1 } else { now + 1 },
                        spent: i % 2 == 0,
                        ..Default::default()
                    };
                    users::put_refresh_token(ctx, &[i; 32], &rec)?;
                }
                Ok(Ok::<_, StoreError>(()))
            })
            .await
            .unwrap();
        let (mut deleted, mut cursors, mut jobs) = (0, Cursors::default(), 0);
        loop {
            let (d, next) = prune_once(&writer, cursors, now).await.unwrap();
            deleted += d;
            jobs += 1;
            cursors = next;
            if cursors.sent.is_none() && cursors.refresh.is_none() {
                break;
            }
        }
        assert_eq!(jobs, 3, "5,000 records in slices of 2,000");
        assert_eq!(deleted, 2500 + 4);
        let tx = store.read().unwrap();
        assert!(sent::get(&tx, "u", "c00000").unwrap().is_none());
        assert!(sent::get(&tx, "u", "c00001").unwrap().is_some());
        assert!(users::refresh_token(&tx, &[3; 32]).unwrap().is_none(), "expired, spent or not");
        assert!(users::refresh_token(&tx, &[4; 32]).unwrap().is_some(), "spent but not expired");
    }
}
