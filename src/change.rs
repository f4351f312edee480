//! Every change to the stored state as data. A service checks a request, builds a change
//! (with everything the change needs: the caller, the time, new ids, limits) and hands it to
//! [`Exec`]; the change's `apply` then runs inside a writer transaction and decides again
//! there, on the state it finds, exactly as the writer jobs always did.
//!
//! Why data and not closures: in cluster mode (docs/cluster.md) a change is appended to the
//! log on NATS JetStream first and every node applies it, in log order, to its own view.
//! `apply` reads nothing but the change and the transaction (never the clock, a random
//! source or a node's config), so every node reaches the same state: the same room seqs,
//! notification ids and refusals, with no coordination beyond the log's order. In
//! single-node mode a change is applied at once in its own writer job, as before.
//!
//! Encoded with prost, like the stored records: a field can be added without breaking the
//! entries already in a log.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;

use crate::auth::Principal;
use crate::auth::accounts::{role_from_proto, role_to_proto};
use crate::config::Role;
use crate::store::{JobResult, StoreError, WriteCtx, Writer};

/// One change: what it does inside the transaction and what it answers.
pub trait Change: Into<Op> + Send + 'static {
    /// What the change answers when it is applied.
    type T: Send + 'static;
    /// How it refuses (a domain error: nothing written, nothing published).
    type E: From<StoreError> + Send + 'static;
    /// Applies the change. Must depend only on `self` and the transaction.
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<Self::T, Self::E>;
}

/// The caller a change acts for, as the change carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Caller {
    /// User id.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Username.
    #[prost(string, tag = "2")]
    pub username: String,
    /// `proto::GlobalRole` as i32.
    #[prost(int32, tag = "3")]
    pub role: i32,
    /// When the access token expires (ms).
    #[prost(int64, tag = "4")]
    pub expires_at_ms: i64,
    /// The token's version (checked against the user when the change is applied).
    #[prost(uint64, tag = "5")]
    pub token_version: u64,
}

impl From<&Principal> for Caller {
    fn from(p: &Principal) -> Caller {
        Caller {
            user_id: p.user_id.clone(),
            username: p.username.clone(),
            role: role_to_proto(p.role) as i32,
            expires_at_ms: p.expires_at_ms,
            token_version: p.token_version,
        }
    }
}

impl Caller {
    /// Back to the principal the domain functions take.
    pub fn principal(&self) -> Principal {
        Principal {
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            role: role_from_proto(self.role).unwrap_or(Role::Guest),
            expires_at_ms: self.expires_at_ms,
            token_version: self.token_version,
        }
    }
}

/// A change's answer with its type erased, and whether it was a refusal (whose events and
/// signals are then dropped).
pub struct Applied {
    /// `Result<C::T, C::E>` of the change `C`, boxed.
    pub answer: Box<dyn Any + Send>,
    /// The change refused.
    pub refused: bool,
}

fn applied<T: Send + 'static, E: Send + 'static>(r: Result<T, E>) -> Applied {
    let refused = r.is_err();
    Applied { answer: Box::new(r), refused }
}

macro_rules! changes {
    ($($tag:literal $variant:ident($ty:ty)),* $(,)?) => {
        /// Every kind of change (a log entry in cluster mode). Tags are part of the log's
        /// format: add, never reuse.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Op {
            $(
                #[allow(missing_docs)]
                #[prost(message, tag = $tag)]
                $variant($ty),
            )*
        }

        impl Op {
            /// Applies the change, its answer erased (for a node applying the log).
            pub fn apply(self, ctx: &mut WriteCtx<'_>) -> Result<Applied, StoreError> {
                match self {
                    $(Op::$variant(c) => Ok(applied(c.apply(ctx)?)),)*
                }
            }
        }

        $(
            impl From<$ty> for Op {
                fn from(c: $ty) -> Op {
                    Op::$variant(c)
                }
            }
        )*
    };
}

use crate::auth::accounts as a;
use crate::chat::messages as m;
use crate::rooms::service as r;

changes! {
    "1" CreateUser(a::CreateUser),
    "2" StartSession(a::StartSession),
    "3" Refresh(a::Refresh),
    "4" Logout(a::Logout),
    "5" UpdateUser(a::UpdateUser),
    "6" CreateRoom(r::CreateRoom),
    "7" Join(r::Join),
    "8" Leave(r::Leave),
    "9" Invite(r::Invite),
    "10" SetRole(r::SetRole),
    "11" Remove(r::Remove),
    "12" Unban(r::Unban),
    "13" UpdateRoom(r::UpdateRoom),
    "14" OpenDirect(r::OpenDirect),
    "15" Post(m::Post),
    "16" Edit(m::Edit),
    "17" Delete(m::Delete),
    "18" MarkRead(m::MarkRead),
    "19" MarkNotificationsRead(crate::notifications::MarkAllRead),
    "20" LastSeen(crate::presence::LastSeen),
    "21" Prune(crate::retention::Prune),
    "22" React(crate::chat::reactions::React),
    "23" Pin(crate::chat::reactions::Pin),
    "24" Mute(r::Mute),
    "25" CreateInvite(a::CreateInvite),
    "26" StartUpload(crate::chat::attachments::StartUpload),
    "27" PutChunk(crate::chat::attachments::PutChunk),
}

/// A log entry: one change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    /// The change.
    #[prost(
        oneof = "Op",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27"
    )]
    pub op: Option<Op>,
}

/// How long a read waits for this node's view to catch up with the log at most (then it
/// answers from the view as it is).
pub const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where changes go: this node's writer (single node), or the cluster's log, applied by every
/// node's view (cluster mode). Cheap to clone.
#[derive(Clone)]
pub struct Exec {
    writer: Writer,
    cluster: Option<Arc<crate::cluster::node::Replicator>>,
}

impl Exec {
    /// Single-node mode: changes go straight to `writer`.
    pub fn local(writer: Writer) -> Exec {
        Exec { writer, cluster: None }
    }

    /// Cluster mode: changes go through the log; `writer` is the view's.
    pub fn cluster(writer: Writer, replicator: Arc<crate::cluster::node::Replicator>) -> Exec {
        Exec { writer, cluster: Some(replicator) }
    }

    /// Whether changes go through the cluster's log (whose entries are at most
    /// `cluster::log::MAX_ENTRY_BYTES`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// The node's writer (for flushing and for local housekeeping that is no change).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Cluster mode: waits, bounded, until this node's view holds everything the log held
    /// when asked (a client resuming here after a seq it saw on another node); single node:
    /// at once.
    pub async fn catch_up(&self) {
        if let Some(log) = &self.cluster {
            log.catch_up(CATCH_UP_WAIT).await;
        }
    }

    /// Applies `change` and returns its answer once it is durable (single node: committed;
    /// cluster: stored by a quorum of the log and applied by this node's view).
    pub async fn run<C: Change>(&self, change: C) -> Result<C::T, C::E> {
        self.submit(change).await?.await
    }

    /// Queues `change` (waiting only for queue space) and returns the future of its answer.
    /// Changes queued one after another from one task are applied in that order.
    pub async fn submit<C: Change>(
        &self,
        change: C,
    ) -> Result<impl Future<Output = Result<C::T, C::E>> + Send + 'static, C::E> {
        use futures_util::future::Either;
        match &self.cluster {
            None => Ok(Either::Left(self.writer.submit(move |ctx| change.apply(ctx)).await?)),
            Some(log) => Ok(Either::Right(log.submit(change).await?)),
        }
    }
}
