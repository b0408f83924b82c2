//! Statements on a local database: prepared once and reused.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use libsql::params::Params;
use libsql::{Connection, Statement, Value};

use crate::db::columns::Table;
use crate::db::op::{UPDATE_COUNTS_SQL, UPDATE_TIMESTEP_SQL};
use crate::error::DbError;

/// The bound parameters of one local multi-row statement: SQLite's limit
/// before 3.32, so any SQLite build accepts it. A remote batch uses the
/// server's limit instead (`REMOTE_MAX_PARAMS` in `encode.rs`).
pub(crate) const MAX_BOUND_PARAMS: usize = 999;

/// The two updates an operation can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Update {
    Timestep,
    SessionCounts,
}

impl Update {
    pub(super) fn sql(self) -> &'static str {
        match self {
            Update::Timestep => UPDATE_TIMESTEP_SQL,
            Update::SessionCounts => UPDATE_COUNTS_SQL,
        }
    }
}

/// The prepared statements of a local connection, by what they write.
#[derive(Default)]
pub(crate) struct LocalExec {
    /// By (table, returning).
    inserts: HashMap<(Table, bool), Statement>,
    updates: HashMap<Update, Statement>,
}

impl std::fmt::Debug for LocalExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExec")
            .field("inserts", &self.inserts.len())
            .finish_non_exhaustive()
    }
}

impl LocalExec {
    /// Inserts one row; see [`run`].
    pub(super) async fn insert(
        &mut self,
        conn: &Connection,
        table: Table,
        returning: bool,
        values: Vec<Value>,
    ) -> Result<(Option<i64>, u64), DbError> {
        let stmt = match self.inserts.entry((table, returning)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(conn.prepare(&table.insert_sql(1, returning)).await?),
        };
        Ok(run_prepared(stmt, Params::Positional(values), returning).await?)
    }

    /// Runs one of the updates.
    pub(super) async fn update(
        &mut self,
        conn: &Connection,
        update: Update,
        values: Vec<Value>,
    ) -> Result<(), DbError> {
        let stmt = match self.updates.entry(update) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(conn.prepare(update.sql()).await?),
        };
        run_prepared(stmt, Params::Positional(values), false).await?;
        Ok(())
    }
}

/// Runs a prepared statement and resets it, whether or not it failed: a
/// statement must be reset before it is bound again. Returns the id a
/// `RETURNING` statement yielded, and how many rows changed.
async fn run_prepared(
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

/// [`LocalExec::insert`] without preparing (a remote connection: each
/// statement is a round trip either way).
pub(super) async fn run_once(
    conn: &Connection,
    sql: &str,
    values: Vec<Value>,
    returning: bool,
) -> Result<(Option<i64>, u64), DbError> {
    if returning {
        let mut rows = conn.query(sql, values).await?;
        let id = match rows.next().await? {
            Some(row) => Some(row.get::<i64>(0)?),
            None => None,
        };
        Ok((id, u64::from(id.is_some())))
    } else {
        Ok((None, conn.execute(sql, values).await? as u64))
    }
}
