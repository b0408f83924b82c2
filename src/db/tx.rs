//! The one transaction helper: `BEGIN IMMEDIATE`, the body, `COMMIT`.
//!
//! It rolls back on every failure: the body's, a failed `COMMIT` (in
//! rollback-journal mode a reader in another process makes `COMMIT` return
//! `SQLITE_BUSY` and leaves the transaction open), a future dropped
//! half-way, and a body that panics (a bug, ours or a library's: it becomes
//! a fatal error, so the writer halts and keeps the batch in its spill
//! file, and its thread lives on). No other code in the crate opens or ends
//! a transaction.
//!
//! On a remote server, [`RemoteTx`] lays the same transaction out as the
//! steps of one Hrana batch, sent in one request: `BEGIN`, the statements
//! (each only while the transaction is open), `COMMIT` only if every
//! statement succeeded, and `ROLLBACK` otherwise. A batch sent while the
//! one before it is still in flight is guarded ([`RemoteTx::behind`]): its
//! first statement fails unless that batch's [`Marker`] row is there, so it
//! commits only after that one did, and otherwise ran first
//! ([`TxShape::ran_first`]) and changed nothing.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use libsql::Connection;

use libsql::Value;

use crate::db::columns::Table;
use crate::db::hrana::{Arg, BatchResult, Cond, Step, StepResult, Stmt};
use crate::db::op::Op;
use crate::error::{DbError, ErrorClass};
use crate::unwind::{catch_unwind, panic_message};

/// Runs `body` inside one `BEGIN IMMEDIATE` … `COMMIT` on `conn`.
///
/// `body` is a future that has not been polled yet (futures are lazy), so
/// none of its statements runs before `BEGIN`. A transaction left open on
/// the connection by an earlier failure is rolled back first.
///
/// # Errors
/// The body's error, or the `BEGIN` or `COMMIT` error converted into `E`;
/// a panic of the body is an [`ErrorClass::Fatal`] error with its message. In
/// every error case the transaction has been rolled back (or SQLite had
/// already rolled it back), so the connection is in autocommit mode again.
///
/// # Cancel safety
/// Dropping the returned future half-way rolls the transaction back: at once
/// on a local connection, on the current tokio runtime for a remote one, and
/// at the latest before the next `transaction` on the connection.
pub(crate) async fn transaction<T, E>(
    conn: &Connection,
    body: impl Future<Output = Result<T, E>>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    if !conn.is_autocommit() {
        tracing::warn!(target: "trace_writer", "a transaction was left open; rolling it back");
        rollback(conn).await;
    }
    conn.execute("BEGIN IMMEDIATE", ())
        .await
        .map_err(|e| E::from(e.into()))?;
    let mut guard = RollbackOnDrop { conn: Some(conn) };
    let result = match catch_unwind(body).await {
        Ok(Ok(value)) => match conn.execute("COMMIT", ()).await {
            Ok(_) => Ok(value),
            Err(e) => Err(E::from(e.into())),
        },
        Ok(Err(e)) => Err(e),
        // A bug, ours or a library's: the same work would panic again, so
        // it is fatal (the writer keeps its batch in the spill file), and the
        // thread that ran it lives on.
        Err(panic) => Err(E::from(DbError::new(
            ErrorClass::Fatal,
            format!(
                "a panic inside the transaction: {}",
                panic_message(panic.as_ref())
            ),
        ))),
    };
    // Past this point the future is not dropped half-way: end it here.
    guard.conn = None;
    if result.is_err() {
        rollback(conn).await;
    }
    result
}

/// Rolls back whatever transaction is open. SQLite rolls some back on its
/// own (a full disk, some constraint failures), so it checks first. A
/// failed rollback is logged: the caller's own error is the one to report.
pub(crate) async fn rollback(conn: &Connection) {
    if conn.is_autocommit() {
        return;
    }
    if let Err(e) = conn.execute("ROLLBACK", ()).await {
        tracing::warn!(target: "trace_writer", error = %e, "rollback failed");
    }
}

/// Rolls back when a `transaction` future is dropped between `BEGIN` and
/// its end.
struct RollbackOnDrop<'c> {
    conn: Option<&'c Connection>,
}

impl Drop for RollbackOnDrop<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.is_autocommit() {
            return;
        }
        // A local connection runs the statement synchronously inside its
        // future, so one poll finishes it. A remote one needs the network:
        // hand it to the runtime, and `transaction` rolls back anything still
        // open before its next `BEGIN`.
        let local = conn.clone();
        let mut fut = pin!(async move { rollback(&local).await });
        let mut cx = Context::from_waker(Waker::noop());
        if fut.as_mut().poll(&mut cx).is_ready() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let conn = conn.clone();
            rt.spawn(async move { rollback(&conn).await });
        }
    }
}

/// `SELECT 1 FROM <table> WHERE id = ?`: whether the row with that id is
/// stored. The one form used to ask it (a replay, the check after a lost
/// reply, the guard of a batch sent behind another).
pub(crate) fn row_exists_sql(table: Table) -> String {
    format!("SELECT 1 FROM {} WHERE id = ?", table.name())
}

/// A row that a batch inserts with an id of ours: it is there once the batch
/// committed, and not before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) table: Table,
    pub(crate) id: i64,
}

/// The [`Marker`] of a batch of `ops`: its first insert with an id that is
/// not a step (a step whose row was made elsewhere keeps that row's id, so
/// ours is never found). `None` for a batch of steps, sessions and updates
/// only.
pub(crate) fn marker(ops: &[&Op]) -> Option<Marker> {
    ops.iter().find_map(|op| match op {
        Op::Insert { table, .. } if *table != Table::Timesteps => {
            op.id().map(|id| Marker { table: *table, id })
        }
        _ => None,
    })
}

/// Fails (SQLite's integer overflow error) unless `marker`'s row exists:
/// the first statement of a batch sent behind another, so that it commits
/// only after that one did.
fn guard(marker: Marker) -> Stmt<'static> {
    Stmt {
        sql: format!(
            "SELECT abs(CASE WHEN EXISTS ({}) THEN 0 ELSE -9223372036854775808 END)",
            row_exists_sql(marker.table)
        )
        .into(),
        args: vec![Arg::owned(Value::Integer(marker.id))],
        want_rows: false,
    }
}

/// A transaction laid out as the steps of one Hrana batch.
#[derive(Debug)]
pub(crate) struct RemoteTx<'a> {
    pub(crate) steps: Vec<Step<'a>>,
    shape: TxShape,
}

/// What reading a [`RemoteTx`]'s answer needs to know of it, kept once its
/// steps are encoded and gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxShape {
    /// Statements between `BEGIN` and `COMMIT`, the guard included.
    body: usize,
    /// The first of them is the guard of [`RemoteTx::behind`].
    guarded: bool,
}

/// How a [`RemoteTx`] ended.
#[derive(Debug)]
pub(crate) enum RemoteOutcome {
    /// Committed: each statement's result, in order.
    Committed(Vec<StepResult>),
    /// Rolled back because these statements (by index in the body given,
    /// the guard not counted) failed.
    Failed(Vec<(usize, DbError)>),
    /// Sent behind a batch that had not committed when it ran (its guard
    /// failed): rolled back, having changed nothing.
    RanFirst,
}

impl<'a> RemoteTx<'a> {
    /// `BEGIN IMMEDIATE`, `body`, then `COMMIT` if all of it succeeded, else
    /// `ROLLBACK`.
    pub(crate) fn new(body: Vec<Stmt<'a>>) -> Self {
        Self::build(body, false)
    }

    /// As [`RemoteTx::new`], for a batch sent while the one whose
    /// `marker` row it names is in flight: a guard runs first, and the
    /// statements of `body` run only if that row is there (when it is not,
    /// nothing is committed, and the rest is not run for nothing).
    pub(crate) fn behind(marker: Marker, mut body: Vec<Stmt<'a>>) -> Self {
        body.insert(0, guard(marker));
        Self::build(body, true)
    }

    fn build(body: Vec<Stmt<'a>>, guarded: bool) -> Self {
        let n = body.len();
        let mut steps = Vec::with_capacity(n + 3);
        steps.push(Step {
            condition: None,
            stmt: Stmt {
                sql: "BEGIN IMMEDIATE".into(),
                args: Vec::new(),
                want_rows: false,
            },
        });
        // Each statement runs only inside the transaction: if one made SQLite
        // roll it back on its own (`RAISE(ROLLBACK)`, a full disk), the rest
        // must not run in autocommit mode and commit one by one.
        let in_tx = Cond::And {
            conds: vec![
                Cond::Ok { step: 0 },
                Cond::Not {
                    cond: Box::new(Cond::IsAutocommit),
                },
            ],
        };
        let after_guard = Cond::And {
            conds: vec![in_tx.clone(), Cond::Ok { step: 1 }],
        };
        for (k, stmt) in body.into_iter().enumerate() {
            let condition = if guarded && k > 0 {
                after_guard.clone()
            } else {
                in_tx.clone()
            };
            steps.push(Step {
                condition: Some(condition),
                stmt,
            });
        }
        let commit = (n + 1) as u32;
        steps.push(Step {
            condition: Some(Cond::And {
                conds: (0..commit).map(|step| Cond::Ok { step }).collect(),
            }),
            stmt: Stmt {
                sql: "COMMIT".into(),
                args: Vec::new(),
                want_rows: false,
            },
        });
        steps.push(Step {
            condition: Some(Cond::And {
                conds: vec![
                    in_tx,
                    Cond::Not {
                        cond: Box::new(Cond::Ok { step: commit }),
                    },
                ],
            }),
            stmt: Stmt {
                sql: "ROLLBACK".into(),
                args: Vec::new(),
                want_rows: false,
            },
        });
        Self {
            steps,
            shape: TxShape { body: n, guarded },
        }
    }

    /// What reading the answer needs, for when the steps are gone.
    pub(crate) fn shape(&self) -> TxShape {
        self.shape
    }

    /// Reads the server's answer: see [`TxShape::outcome`].
    ///
    /// # Errors
    /// `BEGIN`'s or `COMMIT`'s error (the transaction is not committed).
    pub(crate) fn outcome(&self, result: BatchResult) -> Result<RemoteOutcome, DbError> {
        self.shape.outcome(result)
    }
}

impl TxShape {
    /// Whether `result` answers a guarded transaction (see
    /// [`RemoteTx::behind`]) that ran before the batch it was sent behind
    /// committed: then it changed nothing, and the same request can be sent
    /// again.
    pub(crate) fn ran_first(self, result: &BatchResult) -> bool {
        // Step 0 is `BEGIN`; the guard is the first statement after it.
        self.guarded && matches!(result.step_errors.get(1), Some(Some(_)))
    }

    /// Reads the server's answer.
    ///
    /// # Errors
    /// `BEGIN`'s or `COMMIT`'s error (the transaction is not committed).
    pub(crate) fn outcome(self, mut result: BatchResult) -> Result<RemoteOutcome, DbError> {
        let error_of = |result: &BatchResult, i: usize| {
            result
                .step_errors
                .get(i)
                .and_then(|e| e.as_ref())
                .map(|e| e.to_db_error())
        };
        if let Some(e) = error_of(&result, 0) {
            return Err(e);
        }
        if self.ran_first(&result) {
            // Whatever else failed ran without the rows before it.
            return Ok(RemoteOutcome::RanFirst);
        }
        let first = usize::from(self.guarded);
        let failed: Vec<(usize, DbError)> = (first..self.body)
            .filter_map(|i| error_of(&result, i + 1).map(|e| (i - first, e)))
            .collect();
        if !failed.is_empty() {
            return Ok(RemoteOutcome::Failed(failed));
        }
        let commit = self.body + 1;
        if let Some(e) = error_of(&result, commit) {
            return Err(e);
        }
        let committed = result.step_results.get(commit).is_some_and(|r| r.is_some());
        if !committed {
            return Err(DbError::new(
                ErrorClass::Transient,
                "the server did not run COMMIT",
            ));
        }
        let results = result
            .step_results
            .drain(1 + first..commit)
            .map(|r| r.unwrap_or(StepResult { rows: Vec::new() }))
            .collect();
        Ok(RemoteOutcome::Committed(results))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rows(conn: &Connection) -> i64 {
        let mut r = conn.query("SELECT count(*) FROM t", ()).await.unwrap();
        r.next().await.unwrap().unwrap().get::<i64>(0).unwrap()
    }

    /// A body that panics half-way is a fatal error, not a panic of the
    /// caller: what it wrote is rolled back and the connection takes the
    /// next transaction.
    #[tokio::test]
    async fn a_panic_in_the_body_is_a_fatal_error_and_rolls_back() {
        let db = libsql::Builder::new_local(":memory:")
            .build()
            .await
            .unwrap();
        let conn = db.connect().unwrap();
        conn.execute("CREATE TABLE t (x INTEGER)", ())
            .await
            .unwrap();
        let err = transaction(&conn, async {
            conn.execute("INSERT INTO t VALUES (1)", ())
                .await
                .map_err(DbError::from)?;
            let n = rows(&conn).await;
            assert_eq!(n, 0, "boom: {n} row(s) inside the transaction");
            Ok::<(), DbError>(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Fatal);
        assert!(err.message.contains("boom: 1 row(s)"), "{}", err.message);
        assert!(conn.is_autocommit());
        assert_eq!(rows(&conn).await, 0);
        transaction(&conn, async {
            conn.execute("INSERT INTO t VALUES (2)", ())
                .await
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        assert_eq!(rows(&conn).await, 1);
    }
}
