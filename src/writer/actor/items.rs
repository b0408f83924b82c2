//! What a batch is made of: the messages taken off the queue as items, the
//! message that ends a batch, and why one try at a batch did not commit.
//! Shared by the loop (`mod.rs`), one batch's work (`batch.rs`), the remote
//! path (`remote.rs`) and the pipeline (`crate::writer::pipeline`).

use serde_json::Value as Json;

use crate::db::Op;
use crate::error::DbError;
use crate::models::SessionTrace;
use crate::writer::config::WriterConfig;
use crate::writer::protocol::{Msg, Reply};

/// One entry of a batch: a write, or a read answered inside the batch.
pub(crate) enum Item {
    Write {
        op: Op,
        /// Its size, for the queue space it gives back once done.
        bytes: usize,
        /// Set aside: refused by the database, or found stored after a lost
        /// reply. Not sent again.
        failed: bool,
    },
    LoadSteps {
        session_id: String,
        reply: Option<Reply<Vec<(String, i64)>>>,
    },
    GetSession {
        session_id: String,
        reply: Option<Reply<Option<SessionTrace>>>,
    },
}

/// A message that needs everything before it committed: it ends a batch.
pub(crate) enum Terminator {
    Flush(Reply<()>),
    Query {
        sql: String,
        params: Vec<Json>,
        reply: Reply<Vec<Json>>,
    },
    Delete {
        session_id: String,
        reply: Reply<bool>,
    },
    Close(Reply<()>),
}

/// A batch being collected.
#[derive(Default)]
pub(crate) struct Gathering {
    pub(crate) items: Vec<Item>,
    ops: usize,
    bytes: usize,
    /// A read waits in the batch: do not linger for more.
    pub(crate) has_read: bool,
}

/// Where a batch being collected stands after taking one message.
pub(crate) enum BatchBound {
    /// There is room for more.
    Open,
    /// The batch is at its bounds.
    Full,
    /// The message needs the batch committed first: it ends the batch.
    EndsWith(Terminator),
}

impl Gathering {
    /// How many more writes the batch takes before it is full.
    pub(crate) fn room(&self, config: &WriterConfig) -> usize {
        config.max_batch_ops.saturating_sub(self.ops)
    }

    /// Whether the batch holds a write.
    pub(crate) fn has_writes(&self) -> bool {
        self.ops > 0
    }

    pub(crate) fn take(&mut self, msg: Msg, config: &WriterConfig) -> BatchBound {
        match msg {
            Msg::Write { op, bytes } => {
                self.items.push(Item::Write {
                    op,
                    bytes,
                    failed: false,
                });
                self.ops += 1;
                self.bytes += bytes;
                if self.ops >= config.max_batch_ops || self.bytes >= config.max_batch_bytes {
                    return BatchBound::Full;
                }
            }
            Msg::LoadSteps { session_id, reply } => {
                self.has_read = true;
                self.items.push(Item::LoadSteps {
                    session_id,
                    reply: Some(reply),
                });
            }
            Msg::GetSession { session_id, reply } => {
                self.has_read = true;
                self.items.push(Item::GetSession {
                    session_id,
                    reply: Some(reply),
                });
            }
            Msg::Flush { reply } => return BatchBound::EndsWith(Terminator::Flush(reply)),
            Msg::Query { sql, params, reply } => {
                return BatchBound::EndsWith(Terminator::Query { sql, params, reply })
            }
            Msg::DeleteSession { session_id, reply } => {
                return BatchBound::EndsWith(Terminator::Delete { session_id, reply })
            }
            Msg::Close { reply } => return BatchBound::EndsWith(Terminator::Close(reply)),
        }
        BatchBound::Open
    }
}

/// Why one try at a batch did not commit.
pub(crate) enum AttemptError {
    /// Busy, locked, I/O, network: retry the batch after a backoff.
    Transient(DbError),
    /// The transaction was rolled back after a poison operation was set
    /// aside, or a batch sent behind another ran before that one committed:
    /// start again at once (without the poison operation).
    Restart,
    /// A multi-row statement failed: redo the batch row by row to find the
    /// operation at fault.
    MultiRowFailed,
    /// The batch failed for good (or its `BEGIN` or `COMMIT` did).
    Fatal(DbError),
}

impl From<DbError> for AttemptError {
    /// `BEGIN` and `COMMIT` errors: retried if transient, else the batch fails.
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            AttemptError::Transient(e)
        } else {
            AttemptError::Fatal(e)
        }
    }
}
