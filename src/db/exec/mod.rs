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

use crate::db::hrana::{hrana_integer, hrana_text, Arg, HranaClient, Step, Stmt};
use crate::error::{DbError, ErrorClass, BUG};

mod remote;

pub(crate) use remote::{marker, Behind, PreparedRemote, RemoteBatch};

/// The bound parameters of one local multi-row statement: SQLite's limit
/// before 3.32, so any SQLite build accepts it. A remote batch uses the
/// server's limit instead (`REMOTE_MAX_PARAMS` in `remote.rs`).
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
    /// Entries added to `step_remap` so far.
    remaps: u64,
    /// On a remote server: sends a whole batch in one request.
    pipeline: Option<Arc<HranaClient>>,
    /// `INSERT` text by (table, rows), shared by the requests that use it.
    insert_text: HashMap<(Table, usize), Arc<str>>,
}

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
            remaps: 0,
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

    /// The remote server's batch client, shared, for a request sent from a
    /// task of its own.
    pub(crate) fn pipeline_client(&self) -> Option<Arc<HranaClient>> {
        self.pipeline.clone()
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
                let steps = [Step::always(Stmt::query(
                    sql,
                    args.into_iter().map(Arg::owned).collect(),
                ))];
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
        if let Some(real) = find_timestep(&self.conn, session_id, step_id).await? {
            if real != ours {
                self.note_step_elsewhere(ours, real);
            }
        }
        Ok(())
    }

    /// Files what names step id `ours` under `real`, the id of the step's
    /// row created elsewhere.
    fn note_step_elsewhere(&mut self, ours: i64, real: i64) {
        tracing::debug!(target: "trace_writer", ours, real,
            "step created elsewhere; filing under the existing row");
        self.step_remap.insert(ours, real);
        self.remaps += 1;
    }

    /// Gives an operation about to leave the executor (spilled to a file)
    /// the step ids it would have been written with.
    pub(crate) fn remap_op(&self, op: &mut Op) {
        if let Op::Insert { table, values } = op {
            self.remap_step(*table, values);
        }
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
    /// statements as [`MAX_BOUND_PARAMS`] allows: the local path of
    /// `multi_row_inserts(true)` (remote batches are encoded by
    /// `prepare_remote` instead).
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
