//! Background pruning of what the server must not keep forever: idempotency records older
//! than their 24-hour window (API.md keeps them at least that long), refresh tokens past
//! their expiry, and, when `[retention]` asks for it, room events older than `max_age_days`
//! or beyond a room's newest `max_events_per_room`. One small writer job a second, each
//! looking at a bounded slice from where the last stopped, so no job holds the writer for long
//! however large the tables.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::change::{Change, Exec};
use crate::config::RetentionConfig;
use crate::proto::room_event::Kind;
use crate::store::{
    JobResult, StoreError, WriteCtx, events, pins, reactions, rooms, search, sent, threads, unread,
    users,
};

/// Records looked at per job and table.
const SLICE: usize = 2_000;
/// Rooms looked at per job.
const ROOMS_PER_JOB: usize = 64;
/// Room events removed per job, all rooms together.
const EVENTS_PER_JOB: usize = 2_000;
/// Time between jobs.
const EVERY: Duration = Duration::from_secs(1);
/// Time between jobs of a cluster node after a job that found nothing to remove.
const IDLE_SHARED: Duration = Duration::from_secs(10);

/// Which room events have outlived `[retention]`: a pure rule, time passed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Events committed before `now - max_age_ms` go.
    pub max_age_ms: Option<i64>,
    /// Events more than this many below the room's last seq go.
    pub max_events: Option<u64>,
}

impl Rules {
    /// From the validated config.
    pub fn new(c: RetentionConfig) -> Rules {
        Rules {
            max_age_ms: c.max_age.map(|d| d.as_millis().min(i64::MAX as u128) as i64),
            max_events: c.max_events_per_room,
        }
    }

    /// Whether neither limit is set.
    pub fn keeps_everything(&self) -> bool {
        self.max_age_ms.is_none() && self.max_events.is_none()
    }

    /// Whether the event at `seq`, committed at `at_ms`, in a room whose last seq is `last`,
    /// should go at `now_ms`. (The room's last event itself is never removed: callers do not
    /// ask; see `events::prune_front`.)
    pub fn expired(&self, seq: u64, at_ms: i64, last: u64, now_ms: i64) -> bool {
        let too_many = self.max_events.is_some_and(|n| seq + n <= last);
        let too_old = self.max_age_ms.is_some_and(|age| at_ms < now_ms.saturating_sub(age));
        too_many || too_old
    }
}

/// Where each table's pass has got to.
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    sent: Option<(String, String)>,
    refresh: Option<Vec<u8>>,
    /// The room the next slice starts with (empty: the first).
    room: String,
}

/// Attachments (and unfinished uploads) collected per job: each may be a 10 MiB delete.
const ATTACHMENTS_PER_JOB: usize = 16;

/// Runs one slice of pruning at `now_ms`; returns (records deleted, the cursors to go on from).
/// Attachments no message has carried for `attachments_idle` go too.
pub async fn prune_once(
    exec: &Exec,
    rules: Rules,
    attachments_idle: Duration,
    cursors: Cursors,
    now_ms: i64,
) -> Result<(u64, Cursors), StoreError> {
    let (sent_user, sent_cmid) = cursors.sent.map(|(u, c)| (Some(u), Some(c))).unwrap_or_default();
    let change = Prune {
        now_ms,
        max_age_ms: rules.max_age_ms,
        max_events: rules.max_events,
        sent_user,
        sent_cmid,
        refresh: cursors.refresh,
        room: cursors.room,
        attachments_idle_ms: Some(attachments_idle.as_millis().min(i64::MAX as u128) as i64),
    };
    exec.run(change).await
}

/// Change: one slice of pruning at `now_ms`, from the cursors given, by the rules given (in
/// cluster mode every node applies it to the same state, so every view prunes the same).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Prune {
    /// The time the records' ages are measured at.
    #[prost(int64, tag = "1")]
    pub now_ms: i64,
    /// `Rules::max_age_ms`.
    #[prost(int64, optional, tag = "2")]
    pub max_age_ms: Option<i64>,
    /// `Rules::max_events`.
    #[prost(uint64, optional, tag = "3")]
    pub max_events: Option<u64>,
    /// Where the idempotency records' pass is: user.
    #[prost(string, optional, tag = "4")]
    pub sent_user: Option<String>,
    /// And `client_message_id`.
    #[prost(string, optional, tag = "5")]
    pub sent_cmid: Option<String>,
    /// Where the refresh tokens' pass is.
    #[prost(bytes = "vec", optional, tag = "6")]
    pub refresh: Option<Vec<u8>>,
    /// The room the rooms' pass goes on with.
    #[prost(string, tag = "7")]
    pub room: String,
    /// Attachments idle (on no message) this long go (`None`: an entry from before them).
    #[prost(int64, optional, tag = "8")]
    pub attachments_idle_ms: Option<i64>,
}

impl Change for Prune {
    type T = (u64, Cursors);
    type E = StoreError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(u64, Cursors), StoreError> {
        let now_ms = self.now_ms;
        let rules = Rules { max_age_ms: self.max_age_ms, max_events: self.max_events };
        let cursor = self.sent_user.zip(self.sent_cmid);
        let (a, sent) = sent::prune(ctx, cursor, now_ms - sent::KEEP_MS, SLICE)?;
        let (b, refresh) = users::prune_refresh_tokens(ctx, self.refresh, now_ms, SLICE)?;
        let (c, room) = if rules.keeps_everything() {
            (0, String::new())
        } else {
            prune_rooms(ctx, rules, self.room, now_ms)?
        };
        let d = match self.attachments_idle_ms {
            Some(idle) => crate::chat::attachments::collect(
                ctx,
                now_ms.saturating_sub(idle),
                ATTACHMENTS_PER_JOB,
            )?,
            None => 0,
        };
        Ok(Ok((a + b + c + d, Cursors { sent, refresh, room })))
    }
}

/// Prunes the rooms from `from` on (inclusive; empty: the first): at most [`ROOMS_PER_JOB`]
/// rooms and [`EVENTS_PER_JOB`] events. Returns the room the next job starts with: a room with
/// more to remove than the budget left is that room again; after the last room, the first.
fn prune_rooms(
    ctx: &mut WriteCtx<'_>,
    rules: Rules,
    from: String,
    now_ms: i64,
) -> Result<(u64, String), StoreError> {
    // One id more than the slice: where the next slice starts.
    let mut ids = rooms::room_ids_from(&**ctx, &from, ROOMS_PER_JOB + 1)?;
    let mut next =
        if ids.len() > ROOMS_PER_JOB { ids.pop().unwrap_or_default() } else { String::new() };
    let mut budget = EVENTS_PER_JOB;
    let mut deleted = 0;
    for room in &ids {
        let last = events::last_seq(&**ctx, room)?;
        let gone = events::prune_front(ctx, room, budget, |seq, ev| {
            rules.expired(seq, ev.at_ms, last, now_ms)
        })?;
        if let Some(end) = gone.last() {
            unread::unindex_upto(ctx, room, end.seq)?;
        }
        let mut thread_rows = Vec::new();
        for ev in &gone {
            if let Some(Kind::Message(m)) = &ev.kind {
                unread::remove_mentions(ctx, room, ev.seq, &m.mention_user_ids)?;
                search::remove(ctx, room, ev.seq, &crate::search::words(&m.text))?;
                if m.thread_seq != 0 {
                    thread_rows.push((m.thread_seq, ev.seq));
                }
                if m.reply_count != 0 {
                    thread_rows.push((ev.seq, ev.seq));
                }
                if !m.reactions.is_empty() {
                    reactions::clear(ctx, room, ev.seq)?;
                }
                if m.pinned {
                    pins::set(ctx, room, ev.seq, None)?;
                }
                for a in &m.attachments {
                    crate::store::attachments::release(ctx, &a.id, room, now_ms)?;
                }
            }
        }
        threads::forget(ctx, room, &thread_rows)?;
        budget -= gone.len();
        deleted += gone.len() as u64;
        if budget == 0 {
            // This room may have more: the next job starts with it again.
            next.clone_from(room);
            break;
        }
    }
    Ok((deleted, next))
}

/// Prunes a slice every second until `stop`. In cluster mode (`shared`) each slice is an
/// entry of the shared log that every node applies, so after a slice that removed nothing
/// the next comes 10 s later, not 1 s.
pub async fn run(
    exec: Exec,
    retention: RetentionConfig,
    attachments_idle: Duration,
    shared: bool,
    stop: CancellationToken,
) {
    let rules = Rules::new(retention);
    let mut cursors = Cursors::default();
    let mut wait = EVERY;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let now = crate::clock::now_ms();
        match prune_once(&exec, rules, attachments_idle, cursors.clone(), now).await {
            Ok((deleted, next)) => {
                if deleted > 0 {
                    tracing::debug!(deleted, "pruned old events, idempotency records and tokens");
                }
                let idle = deleted == 0 && next.room.is_empty();
                wait = if shared && idle { IDLE_SHARED } else { EVERY };
                cursors = next;
            }
            Err(e) => tracing::warn!(error = %e, "pruning failed; trying again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    use crate::proto::{Message, RoomEvent};
    use crate::store::{RefreshRecord, RoomRecord, SentRecord, Store};

    #[test]
    fn rules() {
        let count = Rules { max_events: Some(100), max_age_ms: None };
        let age = Rules { max_events: None, max_age_ms: Some(1000) };
        let both = Rules { max_events: Some(100), max_age_ms: Some(1000) };
        // (rules, seq, at_ms, last, now, expired)
        let table: &[(Rules, u64, i64, u64, i64, bool)] = &[
            (count, 1, 0, 100, 0, false), // exactly 100 kept: 1..=100
            (count, 1, 0, 101, 0, true),
            (count, 50, 0, 150, 0, true),
            (count, 51, 0, 150, 0, false),
            (age, 1, 4000, 9, 5000, false), // exactly max_age old: kept
            (age, 1, 3999, 9, 5000, true),
            (age, 1, 0, 9, 500, false), // now below max_age: nothing is old
            (both, 1, 4500, 101, 5000, true),
            (both, 2, 3000, 101, 5000, true),
            (both, 2, 4500, 101, 5000, false),
            (Rules::default(), 1, 0, u64::MAX, i64::MAX, false),
        ];
        for (i, (r, seq, at, last, now, want)) in table.iter().enumerate() {
            assert_eq!(r.expired(*seq, *at, *last, *now), *want, "row {i}");
        }
        assert!(Rules::default().keeps_everything() && !count.keeps_everything());
    }

    #[tokio::test]
    async fn room_events_go_from_the_front_in_budgeted_slices() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let now = 1_000_000;
        // 70 rooms (more than one slice); room 0 has 3,000 events (more than one job's
        // budget), the others 150; every event is a message from u1 mentioning u2. Events
        // at seq <= 1,000 of room 0 are old.
        let ids: Vec<String> = (0..70).map(|i| format!("r{i:03}")).collect();
        let rooms = ids.clone();
        writer
            .write(move |ctx| {
                for (i, id) in rooms.iter().enumerate() {
                    let rec = RoomRecord { id: id.clone(), ..Default::default() };
                    crate::store::rooms::put_room(ctx, &rec, true)?;
                    for seq in 1..=if i == 0 { 3000 } else { 150 } {
                        let old = i == 0 && seq <= 1000;
                        let mut ev = RoomEvent {
                            room_id: id.clone(),
                            at_ms: if old { 1 } else { now },
                            actor_id: "u1".into(),
                            kind: Some(Kind::Message(Message {
                                sender_id: "u1".into(),
                                text: "needle".into(),
                                mention_user_ids: vec!["u2".into()],
                                ..Default::default()
                            })),
                            ..Default::default()
                        };
                        events::append(ctx, &mut ev)?;
                        search::add(ctx, id, seq, &["needle".into()])?;
                        unread::index_message(ctx, id, seq, "u1")?;
                        unread::add_mentions(ctx, id, seq, "u1", &["u2".into()])?;
                    }
                }
                Ok(Ok::<_, StoreError>(()))
            })
            .await
            .unwrap();
        let exec = Exec::local(writer);
        let rules = Rules { max_events: Some(100), max_age_ms: Some(now / 2) };
        let (mut deleted, mut cursors, mut jobs) = (Vec::new(), Cursors::default(), 0);
        loop {
            let (d, next) = prune_once(&exec, rules, DAY, cursors, now).await.unwrap();
            jobs += 1;
            if d == 0 && next.room.is_empty() {
                break;
            }
            assert!(d as usize <= EVENTS_PER_JOB, "job {jobs} removed {d}");
            deleted.push(d);
            cursors = next;
        }
        // Room 0 keeps its newest 100 (2,900 go), the others their newest 100 (50 each).
        assert_eq!(deleted.iter().sum::<u64>(), 2900 + 69 * 50);
        let tx = store.read().unwrap();
        for (i, id) in ids.iter().enumerate() {
            let last = if i == 0 { 3000 } else { 150 };
            assert_eq!(events::first_seq(&tx, id).unwrap(), last - 99, "{id}");
            assert_eq!(events::last_seq(&tx, id).unwrap(), last);
            assert_eq!(unread::unread_count(&tx, id, "u2", 0).unwrap(), 100, "index pruned too");
            assert_eq!(unread::mention_count(&tx, "u2", id, 0).unwrap(), 100, "mentions too");
            let mut found = search::RoomSearch::new(id, &["needle".into()]);
            let (mut at_most, mut seqs) = (u64::MAX, Vec::new());
            while let Some(seq) = found.next(&tx, at_most).unwrap() {
                seqs.push(seq);
                at_most = seq - 1;
            }
            let kept: Vec<u64> = (last - 99..=last).rev().collect();
            assert_eq!(seqs, kept, "{id}: the search index pruned too");
        }
    }

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
        let exec = Exec::local(writer);
        let (mut deleted, mut cursors, mut jobs) = (0, Cursors::default(), 0);
        loop {
            let (d, next) = prune_once(&exec, Rules::default(), DAY, cursors, now).await.unwrap();
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
