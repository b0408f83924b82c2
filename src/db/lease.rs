//! The id lease: how the writer numbers rows before they are written.
//!
//! A writer reserves a block of ids per table by raising the table's row in
//! `sqlite_sequence` past them, in a committed transaction of its own.
//! AUTOINCREMENT never hands out an id at or below that row, and every
//! writer leases the same way, so a leased block is its holder's alone,
//! beside plain backends and other writers, in this process or another.
//!
//! The lease is three statements, the same on every database: make sure the
//! table has a `sqlite_sequence` row, raise it by `n` past both itself and
//! the largest id in the table, and read it back. On a remote server they go
//! in one request.

use std::ops::Range;

use libsql::{Connection, Value};

use crate::db::columns::Table;
use crate::db::hrana::{hrana_integer, Arg, HranaClient, StepResult, Stmt};
use crate::db::op::text;
use crate::db::read::first_i64;
use crate::db::tx::{transaction, RemoteOutcome, RemoteTx};
use crate::error::{DbError, ErrorClass, BUG};

/// Adds the table's `sqlite_sequence` row if it has none.
const ENSURE_ROW: &str = "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0 \
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)";

/// The statements that raise and read the row, for a table.
fn raise_and_read(table: Table) -> [String; 2] {
    let name = table.name();
    [
        format!(
            "UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT COALESCE(MAX(id), 0) FROM {name})) \
             + ?2 WHERE name = ?1"
        ),
        "SELECT seq FROM sqlite_sequence WHERE name = ?1".to_string(),
    ]
}

/// The block that ends at `last` (the raised `sqlite_sequence` value).
fn block(table: Table, last: Option<i64>, n: i64) -> Result<Range<i64>, DbError> {
    let last = last.ok_or_else(|| {
        DbError::new(
            ErrorClass::Fatal,
            format!("no sqlite_sequence row for {} after a lease", table.name()),
        )
    })?;
    let end = last.checked_add(1).ok_or_else(|| {
        DbError::new(
            ErrorClass::Fatal,
            format!("the ids of {} are used up", table.name()),
        )
    })?;
    Ok(end - n..end)
}

/// The lease's three statements for a remote transaction (alone, or riding
/// in a batch's request); the third reads the block's end.
pub(crate) fn remote_lease_statements(table: Table, n: i64) -> [Stmt<'static>; 3] {
    // Each statement gets exactly the parameters it names: a server refuses
    // extra ones.
    let name = table.name();
    let named = || vec![Arg::owned(text(name))];
    let [raise, read] = raise_and_read(table);
    [
        Stmt {
            sql: ENSURE_ROW.into(),
            args: named(),
            want_rows: false,
        },
        Stmt {
            sql: raise.into(),
            args: vec![Arg::owned(text(name)), Arg::owned(Value::Integer(n))],
            want_rows: false,
        },
        Stmt::query(read, named()),
    ]
}

/// The block a committed remote lease reserved, from its third statement's
/// result.
///
/// # Errors
/// `Fatal` if the result holds no sequence value.
pub(crate) fn remote_lease_block(
    table: Table,
    n: i64,
    read: Option<&StepResult>,
) -> Result<Range<i64>, DbError> {
    let last = read
        .and_then(|r| r.rows.first())
        .and_then(|row| row.first())
        .and_then(hrana_integer);
    block(table, last, n)
}

/// Reserves `n` ids of `table` in one committed transaction.
///
/// # Errors
/// The database's error, classed; the transaction is rolled back. An id
/// space that would overflow is `Fatal`.
pub(crate) async fn lease_ids(
    conn: &Connection,
    pipeline: Option<&HranaClient>,
    table: Table,
    n: i64,
) -> Result<Range<i64>, DbError> {
    let mut blocks = lease_blocks(conn, pipeline, &[(table, n)]).await?;
    blocks
        .pop()
        .ok_or_else(|| DbError::new(ErrorClass::Fatal, BUG))
}

/// Reserves a block of ids for each `(table, n)`, all in one committed
/// transaction (one request on a remote server: `pipeline`, when the
/// database is remote), in their order.
///
/// # Errors
/// As [`lease_ids`]; then no block is reserved.
pub(crate) async fn lease_blocks(
    conn: &Connection,
    pipeline: Option<&HranaClient>,
    leases: &[(Table, i64)],
) -> Result<Vec<Range<i64>>, DbError> {
    if let Some(client) = pipeline {
        let stmts = leases
            .iter()
            .flat_map(|&(table, n)| remote_lease_statements(table, n))
            .collect();
        let tx = RemoteTx::new(stmts);
        let result = client.batch(&tx.steps).await?;
        return match tx.outcome(result)? {
            RemoteOutcome::Failed(failed) => Err(failed
                .into_iter()
                .next()
                .map(|(_, e)| e)
                .unwrap_or_else(|| DbError::new(ErrorClass::Fatal, BUG))),
            RemoteOutcome::Committed(results) => leases
                .iter()
                .enumerate()
                .map(|(k, &(table, n))| remote_lease_block(table, n, results.get(3 * k + 2)))
                .collect(),
        };
    }
    transaction(conn, async {
        let mut blocks = Vec::with_capacity(leases.len());
        for &(table, n) in leases {
            let name = table.name();
            let named = || vec![text(name)];
            let [raise, read] = raise_and_read(table);
            conn.execute(ENSURE_ROW, named()).await?;
            conn.execute(&raise, vec![text(name), Value::Integer(n)])
                .await?;
            let last = first_i64(conn, &read, named()).await?;
            blocks.push(block(table, last, n)?);
        }
        Ok(blocks)
    })
    .await
}
