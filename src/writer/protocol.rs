//! The messages between the handles and the actor: one FIFO of [`Msg`] and
//! a control channel of [`Control`] that does not wait its turn.
//!
//! In a file of their own, so that the producers' side (the handle, the id
//! allocator) and the actor both import them and neither imports the other.

use serde_json::Value as Json;
use tokio::sync::oneshot;

use crate::db::{Op, Table};
use crate::error::TracingError;
use crate::models::SessionTrace;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, TracingError>>;

/// A session's stored steps, as `(step_id, id)`.
pub(crate) type Steps = Vec<(String, i64)>;

/// Everything a producer sends to the actor, in one FIFO.
pub(crate) enum Msg {
    /// A write; its queue permits are returned once it is done.
    Write { op: Op, bytes: usize },
    /// Step ids of a session, read inside the current batch.
    LoadSteps {
        session_id: String,
        reply: Reply<Vec<(String, i64)>>,
    },
    /// A whole session, read inside the current batch.
    GetSession {
        session_id: String,
        reply: Reply<Option<SessionTrace>>,
    },
    /// User SQL, run after the batch before it is committed.
    Query {
        sql: String,
        params: Vec<Json>,
        reply: Reply<Vec<Json>>,
    },
    /// A delete, run after the batch before it is committed.
    DeleteSession {
        session_id: String,
        reply: Reply<bool>,
    },
    /// A barrier: answered once everything before it is committed.
    Flush { reply: Reply<()> },
    /// Drain, commit, close the connection, stop.
    Close { reply: Reply<()> },
}

/// Messages that do not wait their turn in the FIFO: id leases, and step
/// loads of sessions with nothing queued (so committed rows are the truth).
pub(crate) enum Control {
    Lease(LeaseRequest),
    LoadSteps {
        session_id: String,
        reply: Reply<Vec<(String, i64)>>,
    },
    /// A message that waits for an answer (a read, a flush, a close) was
    /// queued: a lingering actor takes the queue now instead of at the
    /// linger's deadline (see `Actor::linger`).
    Wake,
    /// Fault injection: the actor panics wherever it next serves control
    /// messages (even while retrying a batch), as a bug would make it.
    #[cfg(feature = "fault-injection")]
    Crash,
    /// Fault injection: the actor panics the next time it encodes a batch
    /// to send behind one in flight (a remote writer only).
    #[cfg(feature = "fault-injection")]
    CrashWhenEncodingBehind,
}

/// A request from a producer to the actor for the next block of a table.
#[derive(Debug)]
pub(crate) struct LeaseRequest {
    pub(crate) table: Table,
    pub(crate) size: i64,
}
