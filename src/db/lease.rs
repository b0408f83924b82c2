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

use libsql::Value;

use crate::db::columns::Table;
use crate::db::exec::Executor;
use crate::db::hrana::{Arg, Stmt};
use crate::db::op::text;
use crate::db::read::first_i64;
use crate::db::tx::{transaction, RemoteOutcome, RemoteTx};
use crate::error::{DbError, ErrorClass};

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

/// Reserves `n` ids of `table` in one committed transaction.
///
/// # Errors
/// The database's error, classed; the transaction is rolled back. An id
/// space that would overflow is `Fatal`.
pub(crate) async fn lease_ids(
    exec: &Executor,
    table: Table,
    n: i64,
) -> Result<Range<i64>, DbError> {
    let name = table.name();
    // Each statement gets exactly the parameters it names: a server refuses
    // extra ones.
    let named = || vec![text(name)];
    let both = || vec![text(name), Value::Integer(n)];
    let [raise, read] = raise_and_read(table);
    if let Some(client) = exec.pipeline() {
        let stmt = |sql: &str, args: Vec<Value>, want_rows| Stmt {
            sql: sql.into(),
            args: args.into_iter().map(Arg).collect(),
            want_rows,
        };
        let tx = RemoteTx::new(vec![
            stmt(ENSURE_ROW, named(), false),
            stmt(&raise, both(), false),
            stmt(&read, named(), true),
        ]);
        let result = client.batch(&tx.steps).await?;
        return match tx.outcome(result)? {
            RemoteOutcome::Failed(mut failed) => Err(failed.remove(0).1),
            RemoteOutcome::Committed(results) => {
                let last = results
                    .get(2)
                    .and_then(|r| r.rows.first())
                    .and_then(|row| row.first())
                    .and_then(|v| match v.get("value") {
                        Some(serde_json::Value::String(s)) => s.parse().ok(),
                        _ => None,
                    });
                block(table, last, n)
            }
        };
    }
    let conn = &exec.conn;
    transaction(conn, async {
        conn.execute(ENSURE_ROW, named()).await?;
        conn.execute(&raise, both()).await?;
        let last = first_i64(conn, &read, named()).await?;
        block(table, last, n)
    })
    .await
}
