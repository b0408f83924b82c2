//! The executor on a remote server: a whole batch in one Hrana request.

use std::ops::Range;
use std::sync::Arc;

use hyper::body::Bytes;
use libsql::Value;

use crate::db::columns::Table;
use crate::db::exec::Executor;
use crate::db::hrana::{self, hrana_integer, Arg, BatchResult, Step, Stmt};
use crate::db::lease::{remote_lease_block, remote_lease_statements};
use crate::db::op::{text, Op, UPDATE_COUNTS_SQL, UPDATE_TIMESTEP_SQL};
use crate::db::tx::{RemoteOutcome, RemoteTx, TxShape};
use crate::error::DbError;

/// How a remote batch ended (see [`Executor::finish_remote`]).
#[derive(Debug)]
pub(crate) enum RemoteBatch {
    /// Committed, with the id blocks of the leases that rode along, in
    /// their order.
    Committed(Vec<Range<i64>>),
    /// Rolled back: these operations (indexes into the batch) failed, each
    /// with its error.
    Failed(Vec<(usize, DbError)>),
    /// Rolled back: a multi-row statement failed; send one row per
    /// statement to find the operation at fault.
    MultiRowFailed(DbError),
    /// Rolled back, as it was sent behind a batch that had not committed
    /// when it ran (see [`Behind`]): send it again once that one's outcome
    /// is known.
    RanFirst,
}

/// The batch in flight that a batch is sent behind, before its outcome is
/// known: see [`Executor::prepare_remote`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behind<'a> {
    /// A row of the batch in flight that is there if and only if it
    /// committed (see [`marker`]).
    pub(crate) marker: (Table, i64),
    /// The batch in flight's operations.
    pub(crate) ops: &'a [&'a Op],
}

/// A row that a batch inserts with an id of ours: it is there once the batch
/// committed, and not before. Not a step: a step whose row was made
/// elsewhere keeps that row's id, so ours is never found. `None` for a batch
/// of steps, sessions and updates only.
pub(crate) fn marker(ops: &[&Op]) -> Option<(Table, i64)> {
    ops.iter().find_map(|op| match op {
        Op::Insert { table, .. } if *table != Table::Timesteps => op.id().map(|id| (*table, id)),
        _ => None,
    })
}

/// Fails (SQLite's integer overflow error) unless the row `?` of the table
/// exists: the first statement of a batch sent behind another, so that it
/// commits only after that one did.
fn guard_sql(table: Table) -> String {
    format!(
        "SELECT abs(CASE WHEN EXISTS (SELECT 1 FROM {} WHERE id = ?) THEN 0 \
         ELSE -9223372036854775808 END)",
        table.name()
    )
}

/// A remote batch encoded and ready to send: see
/// [`Executor::prepare_remote`].
#[derive(Debug)]
pub(crate) struct PreparedRemote {
    /// The request body. Shared, not copied, when it is sent (from another
    /// task, and again after a fault).
    pub(crate) body: Bytes,
    shape: TxShape,
    carries: Vec<Carries>,
    /// Where each step's real id is read, and the id this writer gave it.
    id_reads: Vec<(usize, i64)>,
    /// Where each riding lease's block is read.
    lease_reads: Vec<(usize, Table, i64)>,
    /// Sent behind a batch in flight: see [`Behind`].
    behind: bool,
    /// [`Executor::remaps`] when it was encoded.
    remaps: u64,
}

/// Which operations a statement of a remote batch carries.
#[derive(Debug)]
enum Carries {
    /// One operation, by index.
    One(usize),
    /// A multi-row insert of several.
    Many,
    /// The fix-up of records filed under a step created elsewhere.
    FixUp,
    /// The check that the batch sent before this one committed.
    Guard,
    /// A statement of an id lease riding along.
    Lease,
}

/// Moves the events or messages filed under a step id this writer handed out
/// to the real row of that step, when the step was created elsewhere (the
/// insert met its `(session_id, step_id)`). A no-op otherwise.
const FIX_UP_SQL: [&str; 2] = [
    "UPDATE events SET timestep_id = (SELECT id FROM session_timesteps \
     WHERE session_id = ?1 AND step_id = ?2) WHERE timestep_id = ?3 AND ?3 <> \
     (SELECT id FROM session_timesteps WHERE session_id = ?1 AND step_id = ?2)",
    "UPDATE messages SET timestep_id = (SELECT id FROM session_timesteps \
     WHERE session_id = ?1 AND step_id = ?2) WHERE timestep_id = ?3 AND ?3 <> \
     (SELECT id FROM session_timesteps WHERE session_id = ?1 AND step_id = ?2)",
];

/// Most bound parameters in one statement of a remote batch: SQLite's
/// default limit since 3.32. A server with a lower one refuses the
/// statement, and the batch is sent again one row per statement.
const REMOTE_MAX_PARAMS: usize = 32_766;

/// Reads the id of the row of step `step` of session `sid`.
fn step_id_read(sid: &str, step: &str) -> Stmt<'static> {
    Stmt::query(
        "SELECT id FROM session_timesteps WHERE session_id = ? AND step_id = ?",
        vec![Arg::owned(text(sid)), Arg::owned(text(step))],
    )
}

/// How many of `left` rows of `table` the next multi-row statement takes:
/// the largest power of two that fits, and at most what one statement may
/// bind. Statements thus come in a fixed set of sizes, so the cache of
/// their text is bounded (see [`Executor::insert_text`]): a run of 13 rows
/// goes as 8, 4 and 1.
fn chunk_rows(table: Table, left: usize) -> usize {
    let most = (REMOTE_MAX_PARAMS / table.columns().len()).clamp(1, left.max(1));
    1 << (usize::BITS - 1 - most.leading_zeros())
}

impl Executor {
    /// The `INSERT` text for `rows` rows of `table`, cached. Only the sizes
    /// [`chunk_rows`] gives are asked for: powers of two up to what one
    /// statement may bind (32,766 parameters), so the cache holds at most
    /// 14 texts per table (`⌊log2(32766 / columns)⌋ + 1`), under 0.9 MB for
    /// all tables together in the worst case, however long the writer runs.
    pub(super) fn insert_text(&mut self, table: Table, rows: usize) -> Arc<str> {
        self.insert_text
            .entry((table, rows))
            .or_insert_with(|| table.insert_sql(rows, false).into())
            .clone()
    }

    /// Encodes a batch of operations (ids assigned) as one request that
    /// applies it on a remote server in one transaction: see [`RemoteTx`].
    /// With `multi`, runs of inserts go in as multi-row statements, by table.
    /// Leases ride along: `leases` are `(table, size)`.
    ///
    /// With `behind`, the batch may be sent while that one is in flight: it
    /// commits only if that one committed first (its marker row is there),
    /// and it moves its own records filed under that one's steps too, as
    /// that one may teach that a step was made elsewhere only when it
    /// commits.
    ///
    /// The request files records under the steps' real rows as far as the
    /// executor knows them now: once it learns more (see
    /// [`Executor::is_current`]), encode the batch again.
    ///
    /// # Errors
    /// `Fatal` if the batch cannot be encoded.
    pub(crate) fn prepare_remote(
        &mut self,
        ops: &[&'_ Op],
        multi: bool,
        leases: &[(Table, i64)],
        behind: Option<Behind<'_>>,
    ) -> Result<PreparedRemote, DbError> {
        let mut stmts = Vec::new();
        let mut carries = Vec::new();
        let mut steps_made = Vec::new();
        if let Some(Behind {
            marker: (table, id),
            ..
        }) = behind
        {
            stmts.push(Stmt {
                sql: guard_sql(table).into(),
                args: vec![Arg::owned(Value::Integer(id))],
                want_rows: false,
            });
            carries.push(Carries::Guard);
        }
        let mut i = 0;
        while i < ops.len() {
            let op = ops[i];
            let run_end = if multi {
                (i..ops.len())
                    .find(|&j| {
                        !matches!(ops[j], Op::Insert { table, .. } if *table != Table::Timesteps)
                    })
                    .unwrap_or(ops.len())
            } else {
                i
            };
            if run_end > i + 1 {
                // A run of inserts (steps excepted): they commute, since ids
                // are assigned, so each table's rows go in together.
                let mut tables: Vec<Table> = Vec::new();
                for op in &ops[i..run_end] {
                    if let Op::Insert { table, .. } = op {
                        if !tables.contains(table) {
                            tables.push(*table);
                        }
                    }
                }
                tables.sort();
                for table in tables {
                    let rows: Vec<usize> = (i..run_end)
                        .filter(|&j| matches!(ops[j], Op::Insert { table: t, .. } if *t == table))
                        .collect();
                    let mut rest = rows.as_slice();
                    while !rest.is_empty() {
                        let (chunk, tail) = rest.split_at(chunk_rows(table, rest.len()));
                        rest = tail;
                        let mut args = Vec::with_capacity(chunk.len() * table.columns().len());
                        for &j in chunk {
                            if let Op::Insert { values, .. } = ops[j] {
                                let start = args.len();
                                args.extend(values.iter().map(Arg::of));
                                self.remap_args(table, &mut args[start..]);
                            }
                        }
                        stmts.push(Stmt {
                            sql: self.insert_text(table, chunk.len()),
                            args,
                            want_rows: false,
                        });
                        carries.push(Carries::Many);
                    }
                }
                i = run_end;
                continue;
            }
            let (sql, mut args): (Arc<str>, Vec<Arg<'_>>) = match op {
                Op::Insert { table, values } => (
                    self.insert_text(*table, 1),
                    values.iter().map(Arg::of).collect(),
                ),
                Op::UpdateTimestep { values } => (
                    UPDATE_TIMESTEP_SQL.into(),
                    values.iter().map(Arg::of).collect(),
                ),
                Op::UpdateSessionCounts { session_id } => {
                    (UPDATE_COUNTS_SQL.into(), vec![Arg::owned(text(session_id))])
                }
            };
            if let Op::Insert { table, .. } = op {
                self.remap_args(*table, &mut args);
            }
            if let Some((id, sid, step)) = op.timestep_key() {
                steps_made.push((stmts.len(), id, sid.to_string(), step.to_string()));
            }
            stmts.push(Stmt {
                sql,
                args,
                want_rows: false,
            });
            carries.push(Carries::One(i));
            i += 1;
        }
        // Records of this batch filed under a step that turns out to exist
        // already go under its real row, inside the same transaction.
        let steps_behind = behind
            .iter()
            .flat_map(|b| b.ops.iter().filter_map(|op| op.timestep_key()));
        let fix_ups: Vec<(i64, &str, &str)> = steps_made
            .iter()
            .map(|(_, id, sid, step)| (*id, sid.as_str(), step.as_str()))
            .chain(steps_behind)
            .collect();
        for (id, sid, step) in fix_ups {
            for sql in FIX_UP_SQL {
                stmts.push(Stmt {
                    sql: sql.into(),
                    args: vec![
                        Arg::owned(text(sid)),
                        Arg::owned(text(step)),
                        Arg::owned(Value::Integer(id)),
                    ],
                    want_rows: false,
                });
                carries.push(Carries::FixUp);
            }
        }
        // And the real id of each step, read in the same transaction, so that
        // the records of later batches go under it too: learnt with the
        // commit, never lost to a second request that fails.
        let mut id_reads = Vec::with_capacity(steps_made.len());
        for (_, id, sid, step) in &steps_made {
            id_reads.push((stmts.len(), *id));
            stmts.push(step_id_read(sid, step));
            carries.push(Carries::FixUp);
        }
        // Id leases ride in the same transaction: no round trip of their own.
        let mut lease_reads = Vec::with_capacity(leases.len());
        for &(table, n) in leases {
            for stmt in remote_lease_statements(table, n) {
                stmts.push(stmt);
                carries.push(Carries::Lease);
            }
            lease_reads.push((stmts.len() - 1, table, n));
        }
        let tx = if behind.is_some() {
            RemoteTx::guarded(stmts)
        } else {
            RemoteTx::new(stmts)
        };
        Ok(PreparedRemote {
            body: hrana::encode(&tx.steps)?,
            shape: tx.shape(),
            carries,
            id_reads,
            lease_reads,
            behind: behind.is_some(),
            remaps: self.remaps,
        })
    }

    /// Whether `result` answers a batch sent behind another (see [`Behind`])
    /// that ran before that one committed: then it changed nothing, and the
    /// same request can be sent again.
    pub(crate) fn ran_first(batch: &PreparedRemote, result: &BatchResult) -> bool {
        // Step 0 is `BEGIN`; the guard is the first statement after it.
        batch.behind && matches!(result.step_errors.get(1), Some(Some(_)))
    }

    /// Whether `batch` files its records as the executor would now: it has
    /// learnt of no step made elsewhere since the batch was encoded.
    pub(crate) fn is_current(&self, batch: &PreparedRemote) -> bool {
        batch.remaps == self.remaps
    }

    /// Reads the server's answer to a batch made by
    /// [`Executor::prepare_remote`], and learns the real ids of its steps.
    ///
    /// # Errors
    /// `BEGIN`'s or `COMMIT`'s error, or a lease's, classed.
    pub(crate) fn finish_remote(
        &mut self,
        batch: PreparedRemote,
        result: BatchResult,
    ) -> Result<RemoteBatch, DbError> {
        let PreparedRemote {
            shape,
            carries,
            id_reads,
            lease_reads,
            behind,
            ..
        } = batch;
        match shape.outcome(result)? {
            RemoteOutcome::Committed(results) => {
                // A step whose row was made elsewhere has another id than
                // ours: file the batches to come under it.
                for (at, ours) in id_reads {
                    let real = results
                        .get(at)
                        .and_then(|r| r.rows.first())
                        .and_then(|row| row.first())
                        .and_then(hrana_integer);
                    if let Some(real) = real.filter(|real| *real != ours) {
                        self.note_step_elsewhere(ours, real);
                    }
                }
                let mut leased = Vec::with_capacity(lease_reads.len());
                for (at, table, n) in lease_reads {
                    leased.push(remote_lease_block(table, n, results.get(at))?);
                }
                Ok(RemoteBatch::Committed(leased))
            }
            RemoteOutcome::Failed(failed) => {
                if behind
                    && failed
                        .iter()
                        .any(|(at, _)| matches!(carries.get(*at), Some(Carries::Guard)))
                {
                    // Whatever else failed ran without the rows before it.
                    return Ok(RemoteBatch::RanFirst);
                }
                let mut by_op = Vec::new();
                for (at, e) in failed {
                    match &carries[at] {
                        Carries::One(j) => by_op.push((*j, e)),
                        Carries::Many => return Ok(RemoteBatch::MultiRowFailed(e)),
                        Carries::FixUp | Carries::Lease | Carries::Guard => return Err(e),
                    }
                }
                Ok(RemoteBatch::Failed(by_op))
            }
        }
    }

    /// After a remote batch's request failed without an answer: whether the
    /// server applied it all the same (the reply was lost). Its ids were
    /// assigned in advance, so one row tells: the batch is one transaction.
    /// `None` when it has no row with an id but steps (then applying it again
    /// changes nothing: sessions and steps are inserted only if missing, and
    /// updates are idempotent).
    ///
    /// The same request reads the real rows of the batch's steps: if it was
    /// applied, the executor learns of those made elsewhere, as the lost
    /// reply would have told it.
    pub(crate) async fn remote_batch_applied(
        &mut self,
        ops: &[&Op],
    ) -> Result<Option<bool>, DbError> {
        let Some(client) = self.pipeline.clone() else {
            return Ok(None);
        };
        let Some((table, id)) = marker(ops) else {
            return Ok(None);
        };
        let steps: Vec<(i64, &str, &str)> = ops.iter().filter_map(|op| op.timestep_key()).collect();
        let mut stmts = vec![Step::always(Stmt::query(
            format!("SELECT 1 FROM {} WHERE id = ?", table.name()),
            vec![Arg::owned(Value::Integer(id))],
        ))];
        for &(_, sid, step) in &steps {
            stmts.push(Step::always(step_id_read(sid, step)));
        }
        let result = client.batch(&stmts).await?;
        if let Some(e) = result.step_errors.iter().flatten().next() {
            return Err(e.to_db_error());
        }
        let rows = |k: usize| {
            result
                .step_results
                .get(k)
                .and_then(|r| r.as_ref())
                .map(|r| r.rows.as_slice())
                .unwrap_or_default()
        };
        let applied = !rows(0).is_empty();
        if applied {
            for (k, (ours, _, _)) in steps.iter().enumerate() {
                let real = rows(k + 1)
                    .first()
                    .and_then(|row| row.first())
                    .and_then(hrana_integer);
                if let Some(real) = real.filter(|real| real != ours) {
                    self.note_step_elsewhere(*ours, real);
                }
            }
        }
        Ok(Some(applied))
    }

    /// Which of the rows `(table, id)` are stored, in one request (one
    /// statement per table and up to [`REMOTE_MAX_PARAMS`] ids). Ids are
    /// leased, so a stored row with one of ours is ours: after a lost
    /// reply, this tells the rows the server did apply from the rest.
    ///
    /// # Errors
    /// A transport error, or a statement's, classed.
    pub(crate) async fn stored_rows(
        &self,
        rows: &[(Table, i64)],
    ) -> Result<std::collections::HashSet<(Table, i64)>, DbError> {
        let mut stored = std::collections::HashSet::new();
        let Some(client) = self.pipeline.clone() else {
            return Ok(stored);
        };
        let mut stmts = Vec::new();
        let mut tables = Vec::new();
        for table in Table::WITH_IDS {
            let ids: Vec<i64> = rows
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, id)| *id)
                .collect();
            for chunk in ids.chunks(REMOTE_MAX_PARAMS) {
                let marks = vec!["?"; chunk.len()].join(", ");
                stmts.push(Step::always(Stmt::query(
                    format!("SELECT id FROM {} WHERE id IN ({marks})", table.name()),
                    chunk
                        .iter()
                        .map(|id| Arg::owned(Value::Integer(*id)))
                        .collect(),
                )));
                tables.push(table);
            }
        }
        if stmts.is_empty() {
            return Ok(stored);
        }
        let result = client.batch(&stmts).await?;
        if let Some(e) = result.step_errors.iter().flatten().next() {
            return Err(e.to_db_error());
        }
        for (k, table) in tables.into_iter().enumerate() {
            let rows = result
                .step_results
                .get(k)
                .and_then(|r| r.as_ref())
                .map(|r| r.rows.as_slice())
                .unwrap_or_default();
            for row in rows {
                if let Some(id) = row.first().and_then(hrana_integer) {
                    stored.insert((table, id));
                }
            }
        }
        Ok(stored)
    }

    /// The statement that replays `op` on a remote server, idempotent: an
    /// insert of a row that is there already (by id, or by the unique key of
    /// a session or step) changes nothing and returns no row, a new one
    /// returns one row; an update is applied as it is.
    pub(crate) fn replay_stmt<'a>(op: &'a Op) -> Stmt<'a> {
        match op {
            Op::Insert { table, values } => {
                let sql = table.insert_sql(1, false);
                // The table's own `ON CONFLICT` names its unique key; a
                // conflict on the id is a duplicate too.
                let sql = match sql.find(" ON CONFLICT") {
                    Some(at) => sql[..at].to_string(),
                    None => sql,
                };
                Stmt {
                    sql: format!("{sql} ON CONFLICT DO NOTHING RETURNING 1").into(),
                    args: values.iter().map(Arg::of).collect(),
                    want_rows: true,
                }
            }
            Op::UpdateTimestep { values } => Stmt {
                sql: UPDATE_TIMESTEP_SQL.into(),
                args: values.iter().map(Arg::of).collect(),
                want_rows: false,
            },
            Op::UpdateSessionCounts { session_id } => Stmt {
                sql: UPDATE_COUNTS_SQL.into(),
                args: vec![Arg::owned(text(session_id))],
                want_rows: false,
            },
        }
    }

    /// [`Executor::remap_step`] on a row's arguments.
    fn remap_args(&self, table: Table, args: &mut [Arg<'_>]) {
        if self.step_remap.is_empty() {
            return;
        }
        if let Some(arg) = table.timestep_column().and_then(|i| args.get_mut(i)) {
            if let Value::Integer(id) = &*arg.0 {
                if let Some(real) = self.step_remap.get(id) {
                    *arg = Arg::owned(Value::Integer(*real));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_statements_come_in_powers_of_two() {
        let events = Table::Events;
        assert_eq!(chunk_rows(events, 1), 1);
        assert_eq!(chunk_rows(events, 13), 8);
        assert_eq!(chunk_rows(events, 64), 64);
        let most = REMOTE_MAX_PARAMS / events.columns().len();
        let top = chunk_rows(events, 1 << 20);
        assert!(
            top.is_power_of_two() && top <= most && top * 2 > most,
            "{top}"
        );
    }

    /// Batches of every length from 1 to 3,000 rows, as multi-row inserts:
    /// the text cache stays within its stated bound.
    #[tokio::test]
    async fn the_insert_text_cache_is_bounded() {
        let db = libsql::Builder::new_local(":memory:")
            .build()
            .await
            .expect("db");
        let mut exec = Executor::new(db.connect().expect("conn"), true);
        let row = |id: i64| {
            let mut values = vec![Value::Null; Table::Events.columns().len()];
            values[0] = Value::Integer(id);
            values[1] = Value::Text("s".into());
            Op::Insert {
                table: Table::Events,
                values,
            }
        };
        let ops: Vec<Op> = (1..=3000).map(row).collect();
        for n in (1..=300).chain([1000, 2047, 2500, 3000]) {
            let batch: Vec<&Op> = ops[..n].iter().collect();
            exec.prepare_remote(&batch, true, &[], None)
                .expect("encode");
        }
        let most = REMOTE_MAX_PARAMS / Table::Events.columns().len();
        let bound = (usize::BITS - most.leading_zeros()) as usize;
        for table in Table::ALL {
            let most = REMOTE_MAX_PARAMS / table.columns().len();
            assert!(usize::BITS - most.leading_zeros() <= 14, "{table:?}");
        }
        assert!(
            exec.insert_text.len() <= bound,
            "{}",
            exec.insert_text.len()
        );
        // The worst case over every table, as the docs state it.
        let mut bytes = 0;
        for table in Table::ALL {
            let mut rows = 1;
            while rows <= chunk_rows(table, usize::MAX) {
                bytes += exec.insert_text(table, rows).len();
                rows *= 2;
            }
        }
        assert!(bytes < 1 << 20, "{bytes}");
        eprintln!("insert text cache, worst case: {bytes} bytes");
    }
}
