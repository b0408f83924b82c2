//! The executor on a remote server, past encoding a batch (`encode.rs`):
//! what it asks the server through the batch client, each in one request.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use libsql::Value;

use crate::db::columns::Table;
use crate::db::exec::encode::{step_id_read, REMOTE_MAX_PARAMS};
use crate::db::exec::json_form::json_row;
use crate::db::exec::{Backend, Behind, EncodedTx, Executor, RemoteBatch};
use crate::db::hrana::{hrana_integer, hrana_text, Arg, BatchResult, HranaClient, Step, Stmt};
use crate::db::lease::{lease_statements, remote_block, READS_BLOCK};
use crate::db::op::{text, Op, UPDATE_COUNTS_SQL, UPDATE_TIMESTEP_SQL};
use crate::db::tx::{marker, row_exists_sql, RemoteOutcome, RemoteTx};
use crate::error::{DbError, ErrorClass, BUG};

/// Sends `steps` as one batch, and fails with the first step's error.
async fn batch_all(client: &HranaClient, steps: &[Step<'_>]) -> Result<BatchResult, DbError> {
    let result = client.batch(steps).await?;
    if let Some(e) = result.step_errors.iter().flatten().next() {
        return Err(e.to_db_error());
    }
    Ok(result)
}

/// The rows step `k` of `result` returned.
fn rows_of(result: &BatchResult, k: usize) -> &[Vec<serde_json::Value>] {
    result
        .step_results
        .get(k)
        .and_then(|r| r.as_ref())
        .map(|r| r.rows.as_slice())
        .unwrap_or_default()
}

/// The integer in the first column of the first row of step `k`.
fn first_integer(result: &BatchResult, k: usize) -> Option<i64> {
    rows_of(result, k)
        .first()
        .and_then(|row| row.first())
        .and_then(hrana_integer)
}

/// Step loads through the batch client: `sql` with `args`, rows added to
/// `out`.
pub(super) async fn load_steps(
    client: &HranaClient,
    sql: String,
    args: Vec<Value>,
    out: &mut HashMap<String, Vec<(String, i64)>>,
) -> Result<(), DbError> {
    let steps = [Step::always(Stmt::query(
        sql,
        args.into_iter().map(Arg::owned).collect(),
    ))];
    let result = batch_all(client, &steps).await?;
    for row in rows_of(&result, 0) {
        let (Some(sid), Some(step), Some(id)) = (
            row.first().and_then(hrana_text),
            row.get(1).and_then(hrana_text),
            row.get(2).and_then(hrana_integer),
        ) else {
            return Err(DbError::new(
                ErrorClass::Fatal,
                "unexpected row from the server while loading steps",
            ));
        };
        out.entry(sid).or_default().push((step, id));
    }
    Ok(())
}

/// Leases in one remote transaction: see [`Executor::lease_blocks`].
pub(super) async fn lease_blocks(
    client: &HranaClient,
    leases: &[(Table, i64)],
) -> Result<Vec<Range<i64>>, DbError> {
    let stmts = leases
        .iter()
        .flat_map(|&(table, n)| lease_statements(table, n))
        .collect();
    let tx = RemoteTx::new(stmts);
    let result = client.batch(&tx.steps).await?;
    match tx.outcome(result)? {
        RemoteOutcome::Committed(results) => leases
            .iter()
            .enumerate()
            .map(|(k, &(table, n))| remote_block(table, n, results.get(3 * k + READS_BLOCK)))
            .collect(),
        RemoteOutcome::Failed(failed) => Err(failed
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .unwrap_or_else(|| DbError::new(ErrorClass::Fatal, BUG))),
        RemoteOutcome::RanFirst => Err(DbError::new(ErrorClass::Fatal, BUG)),
    }
}

impl Executor {
    /// Encodes a batch as one request: see [`RemoteEncoder::encode`]
    /// (`crate::db::exec::RemoteEncoder`).
    ///
    /// # Errors
    /// `Fatal` if the batch cannot be encoded, or the executor does not
    /// send batches.
    pub(crate) fn prepare_remote(
        &mut self,
        ops: &[&Op],
        multi: bool,
        leases: &[(Table, i64)],
        behind: Option<Behind<'_>>,
    ) -> Result<EncodedTx, DbError> {
        match &mut self.backend {
            Backend::Batched { encoder, .. } => {
                encoder.encode(&self.remap, ops, multi, leases, behind)
            }
            _ => Err(DbError::new(
                ErrorClass::Fatal,
                "no remote pipeline on a local database",
            )),
        }
    }

    /// Whether `batch` files its records as the executor would now: see
    /// [`EncodedTx::is_current`].
    pub(crate) fn is_current(&self, batch: &EncodedTx) -> bool {
        batch.is_current(&self.remap)
    }

    /// Reads the server's answer to `batch`, and learns the real ids of its
    /// steps.
    ///
    /// # Errors
    /// `BEGIN`'s or `COMMIT`'s error, or a lease's, classed.
    pub(crate) fn finish_remote(
        &mut self,
        batch: EncodedTx,
        result: BatchResult,
    ) -> Result<RemoteBatch, DbError> {
        batch.read_answer(result, &mut self.remap)
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
        let Some(client) = self.pipeline_client() else {
            return Ok(None);
        };
        let Some(mark) = marker(ops) else {
            return Ok(None);
        };
        let steps: Vec<(i64, &str, &str)> = ops.iter().filter_map(|op| op.timestep_key()).collect();
        let mut stmts = vec![Step::always(Stmt::query(
            row_exists_sql(mark.table),
            vec![Arg::owned(Value::Integer(mark.id))],
        ))];
        for &(_, sid, step) in &steps {
            stmts.push(Step::always(step_id_read(sid, step)));
        }
        let result = batch_all(&client, &stmts).await?;
        let applied = !rows_of(&result, 0).is_empty();
        if applied {
            for (k, (ours, _, _)) in steps.iter().enumerate() {
                let real = first_integer(&result, k + 1);
                if let Some(real) = real.filter(|real| real != ours) {
                    self.remap.learn(*ours, real);
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
    ) -> Result<HashSet<(Table, i64)>, DbError> {
        let mut stored = HashSet::new();
        let Some(client) = self.pipeline_client() else {
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
        let result = batch_all(&client, &stmts).await?;
        for (k, table) in tables.into_iter().enumerate() {
            for row in rows_of(&result, k) {
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
    pub(crate) fn replay_stmt(op: &Op) -> Stmt<'_> {
        match op {
            Op::Insert { table, values } => {
                // The JSON form where the row has one, as in a batch.
                let (sql, args) = match json_row(values) {
                    Some(arg) => (table.insert_json_sql(), vec![Arg::owned(arg)]),
                    None => (
                        table.insert_sql(1, false),
                        values.iter().map(Arg::of).collect(),
                    ),
                };
                // The table's own `ON CONFLICT` names its unique key; a
                // conflict on the id is a duplicate too.
                let sql = match sql.find(" ON CONFLICT") {
                    Some(at) => sql[..at].to_string(),
                    None => sql,
                };
                Stmt {
                    sql: format!("{sql} ON CONFLICT DO NOTHING RETURNING 1").into(),
                    args,
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
}
