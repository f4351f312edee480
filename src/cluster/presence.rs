//! Presence across the nodes of a cluster, on core NATS rather than the log: presence is not
//! stored (DESIGN.md keeps it in memory), so a lost message only delays it. Each node
//! publishes its users' changes on [`SUBJECT`] as they happen and its whole list every
//! [`EVERY`]; the others merge them (`presence::RemoteBook`), push what changes to their
//! co-members, and forget a node not heard from for [`TTL`] (stopped, killed, cut off).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::presence::{Presence, RemoteBook};
use crate::proto::PresenceStatus;

/// The subject.
pub const SUBJECT: &str = "ec.presence";
/// How often a node sends its whole list (and forgets silent nodes).
pub const EVERY: Duration = Duration::from_secs(5);
/// A node not heard from for this long counts as gone: its users offline there.
pub const TTL: Duration = Duration::from_secs(15);
/// Users in one list at most (a node with more online sends these; the rest only as
/// changes).
pub const MAX_LIST: usize = 20_000;

/// One message: some users' statuses on `node`, or (`full`) all of them.
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(uint64, tag = "1")]
    node: u64,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Item>,
    #[prost(bool, tag = "3")]
    full: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(string, tag = "1")]
    user: String,
    /// `PresenceStatus` as i32.
    #[prost(int32, tag = "2")]
    status: i32,
}

/// The book and the outbox a cluster node's `Presence` starts with, and the outbox's other end
/// for [`run`].
pub type Outbox = mpsc::Receiver<(String, PresenceStatus)>;

/// A fresh book and a bounded outbox (`presence::OUTBOX`).
pub fn link() -> ((RemoteBook, crate::presence::Announce), Outbox) {
    let (tx, rx) = mpsc::channel(crate::presence::OUTBOX);
    ((RemoteBook::new(TTL), tx), rx)
}

/// Sends this node's changes and lists and applies the other nodes' until `stop`.
pub async fn run(
    client: async_nats::Client,
    presence: Presence,
    node: u64,
    mut outbox: Outbox,
    stop: CancellationToken,
) {
    let mut sub = loop {
        match client.subscribe(SUBJECT).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the other nodes' presence yet");
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => continue,
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    let mut tick = tokio::time::interval(EVERY);
    let send = |note: Note| {
        let client = client.clone();
        async move {
            if let Err(e) = client.publish(SUBJECT, note.encode_to_vec().into()).await {
                tracing::debug!(error = %e, "a presence note was not sent");
            }
        }
    };
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else { return };
                let Ok(note) = Note::decode(&m.payload[..]) else {
                    tracing::warn!("an unreadable presence note on {SUBJECT}; ignored");
                    continue;
                };
                if note.node == node {
                    continue;
                }
                let now = crate::clock::now_ms();
                let status = |i: &Item| PresenceStatus::try_from(i.status).unwrap_or(PresenceStatus::Offline);
                if note.full {
                    let list: HashMap<String, PresenceStatus> =
                        note.items.iter().take(MAX_LIST).map(|i| (i.user.clone(), status(i))).collect();
                    presence.remote_list(note.node, list, now);
                } else {
                    for i in &note.items {
                        presence.remote_update(note.node, &i.user, status(i), now);
                    }
                }
            }
            o = outbox.recv() => {
                let Some((user, status)) = o else { return };
                send(Note { node, items: vec![Item { user, status: status as i32 }], full: false }).await;
            }
            _ = tick.tick() => {
                let items = presence
                    .local_list()
                    .into_iter()
                    .take(MAX_LIST)
                    .map(|(user, s)| Item { user, status: s as i32 })
                    .collect();
                send(Note { node, items, full: true }).await;
                presence.remote_expire(crate::clock::now_ms());
            }
            () = stop.cancelled() => return,
        }
    }
}
