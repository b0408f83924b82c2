//! The executor: the one place that writes rows.
//!
//! Both backends apply every [`Op`] through [`Executor`]: the plain backend
//! one call at a time, the writer's actor whole batches inside one
//! transaction (see [`crate::db::transaction`]). It stands on:
//!
//! - `local.rs`: [`LocalExec`](local::LocalExec), the prepared statements of
//!   a local database;
//! - `encode.rs`: [`RemoteEncoder`], a whole batch into one request for a
//!   remote server, and the plan for reading its answer (pure);
//! - `remote.rs`: what else the executor asks a remote server (the check
//!   after a lost reply, leases, step loads);
//! - `remap.rs`: [`StepRemap`], steps whose row was made elsewhere, which
//!   both paths file records under.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use libsql::{Connection, Value};

use crate::db::columns::{text_as_blob, Table};
use crate::db::hrana::HranaClient;
use crate::db::lease::{block, lease_statements, READS_BLOCK};
use crate::db::op::{text, Op};
use crate::db::read::{find_timestep, first_i64, text_cell};
use crate::db::tx::{row_exists_sql, transaction};
use crate::error::DbError;

mod encode;
mod json_form;
mod local;
mod remap;
mod remote;

pub(crate) use encode::{Behind, EncodedTx, RemoteBatch, RemoteEncoder};
use json_form::json_row;
use local::{run_once, LocalExec, Update, MAX_BOUND_PARAMS};
pub(crate) use remap::StepRemap;

/// Applies [`Op`]s on one connection.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) conn: Connection,
    backend: Backend,
    /// Steps made elsewhere, learnt on either path.
    remap: StepRemap,
}

/// How the executor reaches the database.
#[derive(Debug)]
enum Backend {
    /// A file: statements prepared once and reused.
    Local(LocalExec),
    /// A remote server, one statement per request (the plain backend, a
    /// replay).
    Remote,
    /// A remote server, a whole batch per request (the writer).
    Batched {
        client: Arc<HranaClient>,
        encoder: RemoteEncoder,
    },
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

/// A stretch of a batch, in order: one operation alone, or a run of
/// operations grouped by table (see [`segments`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    One(usize),
    /// Each table's rows (indexes), tables in their order.
    Run(Vec<(Table, Vec<usize>)>),
}

impl Segment {
    /// The index of its first operation.
    pub(crate) fn start(&self) -> usize {
        match self {
            Segment::One(k) => *k,
            Segment::Run(tables) => tables
                .iter()
                .filter_map(|(_, rows)| rows.first())
                .min()
                .copied()
                .unwrap_or(0),
        }
    }
}

/// Cuts `n` operations into [`Segment`]s: `table_of(k)` is the table of
/// operation `k` if it may join a run. Ids are assigned, so the inserts of
/// a run commute and each table's rows go in together, in their order;
/// runs of fewer than `min_run` stay single. Both the local batch and the
/// remote encoder group through it. The remote encoder also lets updates
/// of steps join, as rows of the steps' table that go in after the run's
/// step inserts (see `encode::deferrable_step_updates`); the caller decides
/// which operations may join so that the run's order holds.
pub(crate) fn segments(
    n: usize,
    min_run: usize,
    table_of: impl Fn(usize) -> Option<Table>,
) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i..n).find(|&j| table_of(j).is_none()).unwrap_or(n);
        if end > i && end - i >= min_run.max(1) {
            let mut by_table: Vec<(Table, Vec<usize>)> = Vec::new();
            for k in i..end {
                let Some(table) = table_of(k) else { continue };
                match by_table.iter_mut().find(|(t, _)| *t == table) {
                    Some((_, rows)) => rows.push(k),
                    None => by_table.push((table, vec![k])),
                }
            }
            by_table.sort_by_key(|(t, _)| *t);
            out.push(Segment::Run(by_table));
            i = end;
        } else {
            out.extend((i..end.max(i + 1)).map(Segment::One));
            i = end.max(i + 1);
        }
    }
    out
}

impl Executor {
    pub(crate) fn new(conn: Connection, remote: bool) -> Self {
        Self {
            conn,
            backend: if remote {
                Backend::Remote
            } else {
                Backend::Local(LocalExec::default())
            },
            remap: StepRemap::default(),
        }
    }

    /// Sends remote batches in one request each through `client`.
    pub(crate) fn with_pipeline(mut self, client: Option<Arc<HranaClient>>) -> Self {
        if let Some(client) = client {
            self.backend = Backend::Batched {
                client,
                encoder: RemoteEncoder::default(),
            };
        }
        self
    }

    /// The remote server's batch client, shared, for a request sent from a
    /// task of its own.
    pub(crate) fn pipeline_client(&self) -> Option<Arc<HranaClient>> {
        match &self.backend {
            Backend::Batched { client, .. } => Some(client.clone()),
            _ => None,
        }
    }

    /// Whether the connection is to a remote server.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self.backend, Backend::Local(_))
    }

    /// The stored steps of several sessions, as `session -> [(step_id, id)]`,
    /// in one query per 999 sessions (one request on a remote server).
    pub(crate) async fn load_steps_many(
        &self,
        sessions: &[&str],
    ) -> Result<HashMap<String, Vec<(String, i64)>>, DbError> {
        let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for chunk in sessions.chunks(MAX_BOUND_PARAMS) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let args: Vec<Value> = chunk.iter().map(|s| text(s)).collect();
            if let Backend::Batched { client, .. } = &self.backend {
                let sql = format!(
                    "SELECT session_id, step_id, id FROM session_timesteps \
                     WHERE session_id IN ({marks})"
                );
                remote::load_steps(client, sql, args, &mut out).await?;
            } else {
                let sql = format!(
                    "SELECT {}, {}, id FROM session_timesteps WHERE session_id IN ({marks})",
                    text_as_blob("session_id"),
                    text_as_blob("step_id")
                );
                let mut rows = self.conn.query(&sql, args).await?;
                while let Some(row) = rows.next().await? {
                    out.entry(text_cell(&row, 0)?)
                        .or_default()
                        .push((text_cell(&row, 1)?, row.get::<i64>(2)?));
                }
            }
        }
        Ok(out)
    }

    /// Reserves a block of ids for each `(table, n)`, all in one committed
    /// transaction (one request on a remote server), in their order: see
    /// [`crate::db::lease`].
    ///
    /// # Errors
    /// The database's error, classed; then no block is reserved. An id
    /// space that would overflow is `Fatal`.
    pub(crate) async fn lease_blocks(
        &self,
        leases: &[(Table, i64)],
    ) -> Result<Vec<Range<i64>>, DbError> {
        if let Backend::Batched { client, .. } = &self.backend {
            return remote::lease_blocks(client, leases).await;
        }
        let conn = &self.conn;
        transaction(conn, async {
            let mut blocks = Vec::with_capacity(leases.len());
            for &(table, n) in leases {
                let stmts = lease_statements(table, n);
                let mut last = None;
                for (k, stmt) in stmts.iter().enumerate() {
                    if k == READS_BLOCK {
                        last = first_i64(conn, &stmt.sql, stmt.values()).await?;
                    } else {
                        conn.execute(&stmt.sql, stmt.values()).await?;
                    }
                }
                blocks.push(block(table, last, n)?);
            }
            Ok(blocks)
        })
        .await
    }

    /// Continues on a new connection (a remote server dropped the old one),
    /// keeping what the executor learnt about step ids.
    pub(crate) fn replace_connection(&mut self, conn: Connection) {
        self.conn = conn;
        if let Backend::Local(local) = &mut self.backend {
            *local = LocalExec::default();
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
                self.remap.learn(ours, real);
            }
        }
        Ok(())
    }

    /// Gives an operation about to leave the executor (spilled to a file)
    /// the step ids it would have been written with.
    pub(crate) fn remap_op(&self, op: &mut Op) {
        if let Op::Insert { table, values } = op {
            self.remap.values(*table, values);
        }
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
        let (update, values) = match op {
            Op::Insert { table, values } => {
                let returning = table.id_column().is_some() && op.id().is_none();
                let mut values = values.clone();
                self.remap.values(*table, &mut values);
                let (id, changed) = match &mut self.backend {
                    Backend::Local(local) => {
                        local.insert(&self.conn, *table, returning, values).await?
                    }
                    _ => {
                        // The JSON form where the row has one: sqld reads a
                        // bound float inexactly (see `json_form::push_json_value`).
                        let (sql, values) = match json_row(&values) {
                            Some(arg) => {
                                let tail = if returning { " RETURNING id" } else { "" };
                                (format!("{}{tail}", table.insert_json_sql()), vec![arg])
                            }
                            None => (table.insert_sql(1, returning), values),
                        };
                        run_once(&self.conn, &sql, values, returning).await?
                    }
                };
                if changed == 0 && *table == Table::Timesteps && !returning {
                    self.learn_existing_step(op).await?;
                }
                return Ok((id, changed));
            }
            Op::UpdateTimestep { values } => (Update::Timestep, values.clone()),
            Op::UpdateSessionCounts { session_id } => {
                (Update::SessionCounts, vec![text(session_id)])
            }
        };
        match &mut self.backend {
            Backend::Local(local) => local.update(&self.conn, update, values).await?,
            _ => {
                self.conn.execute(update.sql(), values).await?;
            }
        }
        Ok((None, 0))
    }

    /// Inserts rows of one table with ids already assigned, in as few
    /// statements as [`MAX_BOUND_PARAMS`] allows: the local path of
    /// `multi_row_inserts(true)` (remote batches are encoded by
    /// [`RemoteEncoder`] instead).
    pub(crate) async fn insert_multi(
        &mut self,
        table: Table,
        rows: &[&Vec<Value>],
    ) -> Result<(), DbError> {
        if table == Table::Timesteps {
            // One step per many events: each goes alone, so that a step
            // created elsewhere is noticed (see `StepRemap`).
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
                self.remap.values(table, &mut values[start..]);
            }
            self.conn
                .execute(&table.insert_sql(chunk.len(), false), values)
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
            let sql = row_exists_sql(*table);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of three kinds and a lone insert between two others.
    #[test]
    fn segments_group_runs_by_table() {
        let tables = [
            Some(Table::Messages),
            Some(Table::Events),
            Some(Table::Messages),
            None,
            Some(Table::Events),
            None,
        ];
        let got = segments(tables.len(), 2, |k| tables[k]);
        assert_eq!(
            got,
            [
                Segment::Run(vec![
                    (Table::Events, vec![1]),
                    (Table::Messages, vec![0, 2])
                ]),
                Segment::One(3),
                Segment::One(4),
                Segment::One(5),
            ]
        );
        let got = segments(tables.len(), 1, |k| tables[k]);
        assert_eq!(got[2], Segment::Run(vec![(Table::Events, vec![4])]));
    }
}
