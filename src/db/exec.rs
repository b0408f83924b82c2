//! The executor: the one place that writes rows.
//!
//! Both backends apply every [`Op`] through [`Executor`]: the plain backend
//! one call at a time, the writer's actor whole batches inside one
//! transaction (see [`crate::db::transaction`]).

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use libsql::params::Params;
use libsql::{Connection, Statement, Value};

use crate::db::columns::Table;
use crate::db::op::{text, Op, UPDATE_COUNTS_SQL, UPDATE_TIMESTEP_SQL};
use crate::db::read::{find_timestep, first_i64};
use crate::db::tx::transaction;
use std::sync::Arc;

use crate::db::hrana::{Arg, HranaClient, Stmt};
use crate::db::tx::{RemoteOutcome, RemoteTx};
use crate::error::{DbError, ErrorClass, BUG};

/// SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32 is 32766; stay
/// well under it so that older servers accept the statements too.
const MAX_BOUND_PARAMS: usize = 999;

/// Applies [`Op`]s on one connection, reusing prepared statements.
pub(crate) struct Executor {
    pub(crate) conn: Connection,
    remote: bool,
    /// Prepared statements by (table, returning). Remote connections do not
    /// cache: each statement is a round trip either way.
    inserts: HashMap<(Table, bool), Statement>,
    update_timestep: Option<Statement>,
    update_counts: Option<Statement>,
    /// Step ids handed out by this writer whose `(session_id, step_id)` row
    /// turned out to exist already, created by someone else (another writer,
    /// a plain backend, another process): the id given out, and the real
    /// row's id. Events and messages that name the first are written with
    /// the second. It only grows on such a conflict, a rare event.
    step_remap: HashMap<i64, i64>,
    /// On a remote server: sends a whole batch in one request.
    pipeline: Option<Arc<HranaClient>>,
    /// `INSERT` text by (table, rows), shared by the requests that use it.
    insert_text: HashMap<(Table, usize), Arc<str>>,
}

/// How a remote batch ended (see [`Executor::apply_remote`]).
#[derive(Debug)]
pub(crate) enum RemoteBatch {
    Committed,
    /// Rolled back: these operations (indexes into the batch) failed, each
    /// with its error.
    Failed(Vec<(usize, DbError)>),
    /// Rolled back: a multi-row statement failed; send one row per
    /// statement to find the operation at fault.
    MultiRowFailed(DbError),
}

/// A Hrana text value.
fn hrana_text(v: &serde_json::Value) -> Option<String> {
    (v.get("type")?.as_str()? == "text")
        .then(|| v.get("value")?.as_str().map(str::to_string))
        .flatten()
}

/// A Hrana integer value (sent as a string).
fn hrana_integer(v: &serde_json::Value) -> Option<i64> {
    match v.get("value")? {
        serde_json::Value::String(s) => s.parse().ok(),
        n => n.as_i64(),
    }
}

/// Which operations a statement of a remote batch carries.
enum Carries {
    /// One operation, by index.
    One(usize),
    /// A multi-row insert of several.
    Many,
    /// The fix-up of records filed under a step created elsewhere.
    FixUp,
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

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// What replaying one operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replayed {
    Inserted,
    /// The row was there already.
    Duplicate,
    /// An update, applied.
    Updated,
}

#[derive(Clone, Copy)]
enum Cached {
    UpdateTimestep,
    UpdateCounts,
}

/// Runs a prepared statement and resets it, whether or not it failed: a
/// statement must be reset before it is bound again. Returns the id a
/// `RETURNING` statement yielded, and how many rows changed.
async fn run_stmt(
    stmt: &mut Statement,
    params: Params,
    returning: bool,
) -> libsql::Result<(Option<i64>, u64)> {
    stmt.reset();
    let result = if returning {
        async {
            let mut rows = stmt.query(params).await?;
            let id = match rows.next().await? {
                Some(row) => Some(row.get::<i64>(0)?),
                None => None,
            };
            Ok((id, u64::from(id.is_some())))
        }
        .await
    } else {
        stmt.execute(params).await.map(|n| (None, n as u64))
    };
    stmt.reset();
    result
}

impl Executor {
    pub(crate) fn new(conn: Connection, remote: bool) -> Self {
        Self {
            conn,
            remote,
            inserts: HashMap::new(),
            update_timestep: None,
            update_counts: None,
            step_remap: HashMap::new(),
            pipeline: None,
            insert_text: HashMap::new(),
        }
    }

    /// Sends remote batches in one request each through `client`.
    pub(crate) fn with_pipeline(mut self, client: Option<Arc<HranaClient>>) -> Self {
        self.pipeline = client;
        self
    }

    /// Whether whole batches go to the server in one request.
    pub(crate) fn has_pipeline(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The remote server's batch client, if any.
    pub(crate) fn pipeline(&self) -> Option<&HranaClient> {
        self.pipeline.as_deref()
    }

    fn insert_text(&mut self, table: Table, rows: usize) -> Arc<str> {
        self.insert_text
            .entry((table, rows))
            .or_insert_with(|| table.insert_sql(rows, false).into())
            .clone()
    }

    /// Applies a batch of operations (ids assigned) on a remote server in
    /// one transaction and one request: see [`RemoteTx`]. With `multi`,
    /// runs of inserts go in as multi-row statements, by table.
    ///
    /// # Errors
    /// A transport error, or `BEGIN`'s or `COMMIT`'s, classed. After a
    /// transient one the batch may or may not have been applied: see
    /// [`Executor::remote_batch_applied`].
    pub(crate) async fn apply_remote(
        &mut self,
        ops: &[&Op],
        multi: bool,
    ) -> Result<RemoteBatch, DbError> {
        let Some(client) = self.pipeline.clone() else {
            return Err(DbError::new(
                ErrorClass::Fatal,
                "no remote pipeline on a local database",
            ));
        };
        let mut stmts = Vec::new();
        let mut carries = Vec::new();
        let mut steps_made = Vec::new();
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
                    let per_chunk = (REMOTE_MAX_PARAMS / table.columns().len()).max(1);
                    for chunk in rows.chunks(per_chunk) {
                        let mut args = Vec::with_capacity(chunk.len() * table.columns().len());
                        for &j in chunk {
                            if let Op::Insert { values, .. } = ops[j] {
                                let start = args.len();
                                args.extend(values.iter().cloned().map(Arg));
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
            let (sql, mut args): (Arc<str>, Vec<Arg>) = match op {
                Op::Insert { table, values } => (
                    self.insert_text(*table, 1),
                    values.iter().cloned().map(Arg).collect(),
                ),
                Op::UpdateTimestep { values } => (
                    UPDATE_TIMESTEP_SQL.into(),
                    values.iter().cloned().map(Arg).collect(),
                ),
                Op::UpdateSessionCounts { session_id } => {
                    (UPDATE_COUNTS_SQL.into(), vec![Arg(text(session_id))])
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
        for (_, id, sid, step) in &steps_made {
            for sql in FIX_UP_SQL {
                stmts.push(Stmt {
                    sql: sql.into(),
                    args: vec![Arg(text(sid)), Arg(text(step)), Arg(Value::Integer(*id))],
                    want_rows: false,
                });
                carries.push(Carries::FixUp);
            }
        }
        let tx = RemoteTx::new(stmts);
        let result = client.batch(&tx.steps).await?;
        match tx.outcome(result)? {
            RemoteOutcome::Committed(results) => {
                // A step insert that changed nothing met a row made
                // elsewhere: learn its id for the batches to come.
                for (at, ..) in &steps_made {
                    if results.get(*at).is_some_and(|r| r.affected_row_count == 0) {
                        if let Carries::One(j) = carries[*at] {
                            self.learn_existing_step(ops[j]).await?;
                        }
                    }
                }
                Ok(RemoteBatch::Committed)
            }
            RemoteOutcome::Failed(failed) => {
                let mut by_op = Vec::new();
                for (at, e) in failed {
                    match &carries[at] {
                        Carries::One(j) => by_op.push((*j, e)),
                        Carries::Many => return Ok(RemoteBatch::MultiRowFailed(e)),
                        Carries::FixUp => return Err(e),
                    }
                }
                Ok(RemoteBatch::Failed(by_op))
            }
        }
    }

    /// After a remote batch's request failed without an answer: whether the
    /// server applied it all the same (the reply was lost). Its ids were
    /// assigned in advance, so one row tells: the batch is one transaction.
    /// `None` when it has no row with an id (then applying it again changes
    /// nothing: sessions and steps are inserted only if missing, and updates
    /// are idempotent).
    pub(crate) async fn remote_batch_applied(&self, ops: &[&Op]) -> Result<Option<bool>, DbError> {
        let Some(client) = &self.pipeline else {
            return Ok(None);
        };
        let Some((table, id)) = ops.iter().find_map(|op| match op {
            Op::Insert { table, .. } => op.id().map(|id| (*table, id)),
            _ => None,
        }) else {
            return Ok(None);
        };
        let steps = [crate::db::hrana::Step {
            condition: None,
            stmt: Stmt {
                sql: format!("SELECT 1 FROM {} WHERE id = ?", table.name()).into(),
                args: vec![Arg(Value::Integer(id))],
                want_rows: true,
            },
        }];
        let result = client.batch(&steps).await?;
        if let Some(Some(e)) = result.step_errors.first() {
            return Err(e.to_db_error());
        }
        Ok(Some(result.step_results.first().is_some_and(|r| {
            r.as_ref().is_some_and(|r| !r.rows.is_empty())
        })))
    }

    /// The stored steps of several sessions, as `session -> [(step_id, id)]`,
    /// in one query per 999 sessions (one request on a remote server).
    pub(crate) async fn load_steps_many(
        &self,
        sessions: &[&str],
    ) -> Result<HashMap<String, Vec<(String, i64)>>, DbError> {
        let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for chunk in sessions.chunks(MAX_BOUND_PARAMS) {
            let sql = format!(
                "SELECT session_id, step_id, id FROM session_timesteps WHERE session_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let args: Vec<Value> = chunk.iter().map(|s| text(s)).collect();
            if let Some(client) = &self.pipeline {
                let steps = [crate::db::hrana::Step {
                    condition: None,
                    stmt: Stmt {
                        sql: sql.into(),
                        args: args.into_iter().map(Arg).collect(),
                        want_rows: true,
                    },
                }];
                let result = client.batch(&steps).await?;
                if let Some(Some(e)) = result.step_errors.first() {
                    return Err(e.to_db_error());
                }
                let rows = result
                    .step_results
                    .into_iter()
                    .next()
                    .flatten()
                    .map(|r| r.rows)
                    .unwrap_or_default();
                for row in rows {
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
            } else {
                let mut rows = self.conn.query(&sql, args).await?;
                while let Some(row) = rows.next().await? {
                    out.entry(row.get::<String>(0)?)
                        .or_default()
                        .push((row.get::<String>(1)?, row.get::<i64>(2)?));
                }
            }
        }
        Ok(out)
    }

    /// [`Executor::remap_step`] on a row's arguments.
    fn remap_args(&self, table: Table, args: &mut [Arg]) {
        if self.step_remap.is_empty() {
            return;
        }
        if let Some(Arg(Value::Integer(id))) = table.timestep_column().and_then(|i| args.get_mut(i))
        {
            if let Some(real) = self.step_remap.get(id) {
                *id = *real;
            }
        }
    }

    /// Continues on a new connection (a remote server dropped the old one),
    /// keeping what the executor learnt about step ids.
    pub(crate) fn replace_connection(&mut self, conn: Connection) {
        self.conn = conn;
        self.inserts.clear();
        self.update_timestep = None;
        self.update_counts = None;
    }

    /// Writes an event or message under the step's real row (see
    /// `step_remap`).
    fn remap_step(&self, table: Table, values: &mut [Value]) {
        if self.step_remap.is_empty() {
            return;
        }
        if let Some(slot) = table.timestep_column().and_then(|i| values.get_mut(i)) {
            if let Value::Integer(id) = slot {
                if let Some(real) = self.step_remap.get(id) {
                    *slot = Value::Integer(*real);
                }
            }
        }
    }

    /// A timestep insert met an existing `(session_id, step_id)` row: learn
    /// its id, so that the rows filed under ours go under it.
    async fn learn_existing_step(&mut self, op: &Op) -> Result<(), DbError> {
        let Some((ours, session_id, step_id)) = op.timestep_key() else {
            return Ok(());
        };
        match find_timestep(&self.conn, session_id, step_id).await? {
            Some(real) if real != ours => {
                tracing::debug!(target: "trace_writer", session = session_id, step = step_id,
                    ours, real, "step created elsewhere; filing under the existing row");
                self.step_remap.insert(ours, real);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the connection is to a remote server.
    pub(crate) fn is_remote(&self) -> bool {
        self.remote
    }

    /// Applies one operation. An insert whose id is `Null` returns the id the
    /// database chose; `Ok(None)` means the row already existed (ensure calls)
    /// or the operation has no id.
    ///
    /// # Errors
    /// The statement's error, classed. SQLite may have rolled back the
    /// enclosing transaction (see [`Executor::in_transaction`]).
    pub(crate) async fn apply(&mut self, op: &Op) -> Result<Option<i64>, DbError> {
        Ok(self.apply_counted(op).await?.0)
    }

    /// [`Executor::apply`], also returning how many rows changed: 0 for an
    /// insert that met an existing session or step.
    async fn apply_counted(&mut self, op: &Op) -> Result<(Option<i64>, u64), DbError> {
        match op {
            Op::Insert { table, values } => {
                let returning = table.id_column().is_some() && op.id().is_none();
                let mut values = values.clone();
                self.remap_step(*table, &mut values);
                let params = Params::Positional(values);
                let (id, changed) = if self.remote {
                    let sql = table.insert_sql(1, returning);
                    if returning {
                        let mut rows = self.conn.query(&sql, params).await?;
                        let id = match rows.next().await? {
                            Some(row) => Some(row.get::<i64>(0)?),
                            None => None,
                        };
                        (id, u64::from(id.is_some()))
                    } else {
                        (None, self.conn.execute(&sql, params).await? as u64)
                    }
                } else {
                    let stmt = match self.inserts.entry((*table, returning)) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            e.insert(self.conn.prepare(&table.insert_sql(1, returning)).await?)
                        }
                    };
                    run_stmt(stmt, params, returning).await?
                };
                if changed == 0 && *table == Table::Timesteps && !returning {
                    self.learn_existing_step(op).await?;
                }
                Ok((id, changed))
            }
            Op::UpdateTimestep { values } => {
                let params = Params::Positional(values.clone());
                self.run_cached(Cached::UpdateTimestep, params).await?;
                Ok((None, 0))
            }
            Op::UpdateSessionCounts { session_id } => {
                let params = Params::Positional(vec![text(session_id)]);
                self.run_cached(Cached::UpdateCounts, params).await?;
                Ok((None, 0))
            }
        }
    }

    async fn run_cached(&mut self, kind: Cached, params: Params) -> Result<(), DbError> {
        let sql = match kind {
            Cached::UpdateTimestep => UPDATE_TIMESTEP_SQL,
            Cached::UpdateCounts => UPDATE_COUNTS_SQL,
        };
        if self.remote {
            self.conn.execute(sql, params).await?;
            return Ok(());
        }
        let slot = match kind {
            Cached::UpdateTimestep => &mut self.update_timestep,
            Cached::UpdateCounts => &mut self.update_counts,
        };
        if slot.is_none() {
            *slot = Some(self.conn.prepare(sql).await?);
        }
        let stmt = slot.as_mut().expect(BUG);
        run_stmt(stmt, params, false).await?;
        Ok(())
    }

    /// Inserts rows of one table with ids already assigned, in as few
    /// statements as SQLite's bound-parameter limit allows. Used on remote
    /// connections, where each statement is a network round trip.
    pub(crate) async fn insert_multi(
        &mut self,
        table: Table,
        rows: &[&Vec<Value>],
    ) -> Result<(), DbError> {
        if table == Table::Timesteps {
            // One step per many events: each goes alone, so that a step
            // created elsewhere is noticed (see `step_remap`).
            for row in rows {
                let op = Op::Insert {
                    table,
                    values: (*row).clone(),
                };
                self.apply(&op).await?;
            }
            return Ok(());
        }
        let per_row = table.columns().len();
        let max_rows = (MAX_BOUND_PARAMS / per_row).max(1);
        for chunk in rows.chunks(max_rows) {
            let mut values = Vec::with_capacity(chunk.len() * per_row);
            for row in chunk {
                let start = values.len();
                values.extend(row.iter().cloned());
                self.remap_step(table, &mut values[start..]);
            }
            self.conn
                .execute(
                    &table.insert_sql(chunk.len(), false),
                    Params::Positional(values),
                )
                .await?;
        }
        Ok(())
    }

    /// Applies a replayed operation, telling a row that is already there
    /// (by id, or by the unique key of a session or step) from a new one. A
    /// row the database refuses is an error of class `Operation`.
    pub(crate) async fn replay(&mut self, op: &Op) -> Result<Replayed, DbError> {
        let Op::Insert { table, .. } = op else {
            self.apply(op).await?;
            return Ok(Replayed::Updated);
        };
        if let Some(id) = op.id() {
            let sql = format!("SELECT 1 FROM {} WHERE id = ?", table.name());
            if first_i64(&self.conn, &sql, vec![Value::Integer(id)])
                .await?
                .is_some()
            {
                return Ok(Replayed::Duplicate);
            }
        }
        let (_, changed) = self.apply_counted(op).await?;
        Ok(if changed == 0 {
            Replayed::Duplicate
        } else {
            Replayed::Inserted
        })
    }

    /// Deletes a session and everything that belongs to it, in one
    /// transaction. Returns whether the session existed.
    pub(crate) async fn delete_session(&mut self, session_id: &str) -> Result<bool, DbError> {
        let conn = &self.conn;
        transaction(conn, async {
            // Children first, then the session row.
            for table in [
                Table::EventRewards,
                Table::OutcomeRewards,
                Table::Messages,
                Table::Events,
                Table::Timesteps,
            ] {
                conn.execute(
                    &format!("DELETE FROM {} WHERE session_id = ?", table.name()),
                    vec![text(session_id)],
                )
                .await?;
            }
            let n = conn
                .execute(
                    "DELETE FROM session_traces WHERE session_id = ?",
                    vec![text(session_id)],
                )
                .await?;
            Ok(n > 0)
        })
        .await
    }

    /// Whether a transaction is open (SQLite rolls some back on its own after
    /// an error, such as a full disk).
    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }
}
