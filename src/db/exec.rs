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
use crate::db::tx::transaction;
use crate::error::{DbError, BUG};

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
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Cached {
    UpdateTimestep,
    UpdateCounts,
}

/// Runs a prepared statement and resets it, whether or not it failed: a
/// statement must be reset before it is bound again.
async fn run_stmt(
    stmt: &mut Statement,
    params: Params,
    returning: bool,
) -> libsql::Result<Option<i64>> {
    stmt.reset();
    let result = if returning {
        async {
            let mut rows = stmt.query(params).await?;
            Ok(match rows.next().await? {
                Some(row) => Some(row.get::<i64>(0)?),
                None => None,
            })
        }
        .await
    } else {
        stmt.execute(params).await.map(|_| None)
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
        match op {
            Op::Insert { table, values } => {
                let returning = table.id_column().is_some() && op.id().is_none();
                let params = Params::Positional(values.clone());
                if self.remote {
                    let sql = table.insert_sql(1, returning);
                    if returning {
                        let mut rows = self.conn.query(&sql, params).await?;
                        return Ok(match rows.next().await? {
                            Some(row) => Some(row.get::<i64>(0)?),
                            None => None,
                        });
                    }
                    self.conn.execute(&sql, params).await?;
                    return Ok(None);
                }
                let stmt = match self.inserts.entry((*table, returning)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        e.insert(self.conn.prepare(&table.insert_sql(1, returning)).await?)
                    }
                };
                Ok(run_stmt(stmt, params, returning).await?)
            }
            Op::UpdateTimestep { values } => {
                let params = Params::Positional(values.clone());
                self.run_cached(Cached::UpdateTimestep, params).await?;
                Ok(None)
            }
            Op::UpdateSessionCounts { session_id } => {
                let params = Params::Positional(vec![text(session_id)]);
                self.run_cached(Cached::UpdateCounts, params).await?;
                Ok(None)
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
        let per_row = table.columns().len();
        let max_rows = (MAX_BOUND_PARAMS / per_row).max(1);
        for chunk in rows.chunks(max_rows) {
            let mut values = Vec::with_capacity(chunk.len() * per_row);
            for row in chunk {
                values.extend(row.iter().cloned());
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

    /// Applies an operation, skipping an insert whose row (by id or unique
    /// key) already exists; returns how many rows were inserted.
    pub(crate) async fn apply_ignoring_duplicates(&mut self, op: &Op) -> Result<usize, DbError> {
        match op {
            Op::Insert { table, values } => Ok(self
                .conn
                .execute(
                    &table.insert_or_ignore_sql(),
                    Params::Positional(values.clone()),
                )
                .await? as usize),
            other => self.apply(other).await.map(|_| 0),
        }
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
