//! The id lease: how the writer numbers rows before they are written.
//!
//! A writer reserves a block of ids per table by raising the table's row in
//! `sqlite_sequence` past them, in a committed transaction of its own.
//! AUTOINCREMENT never hands out an id at or below that row, and every
//! writer leases the same way, so a leased block is its holder's alone,
//! beside plain backends and other writers, in this process or another.

use std::ops::Range;

use libsql::{Connection, Value};

use crate::db::columns::Table;
use crate::db::op::text;
use crate::db::read::first_i64;
use crate::db::tx::transaction;
use crate::error::{DbError, ErrorClass};

/// Reserves `n` ids of `table` in one committed transaction.
///
/// # Errors
/// The database's error, classed; the transaction is rolled back.
pub(crate) async fn lease_ids(
    conn: &Connection,
    table: Table,
    n: i64,
) -> Result<Range<i64>, DbError> {
    transaction(conn, async {
        let name = table.name();
        let seq = first_i64(
            conn,
            "SELECT seq FROM sqlite_sequence WHERE name = ?",
            vec![text(name)],
        )
        .await?;
        let max = first_i64(
            conn,
            &format!("SELECT COALESCE(MAX(id), 0) FROM {name}"),
            vec![],
        )
        .await?
        .unwrap_or(0);
        let start = seq.unwrap_or(0).max(max).saturating_add(1);
        let end = start.checked_add(n).ok_or_else(|| {
            DbError::new(
                ErrorClass::Fatal,
                format!("the ids of {name} are used up: cannot lease {n} past {start}"),
            )
        })?;
        if seq.is_some() {
            conn.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = ?",
                vec![Value::Integer(end - 1), text(name)],
            )
            .await?;
        } else {
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                vec![text(name), Value::Integer(end - 1)],
            )
            .await?;
        }
        Ok(start..end)
    })
    .await
}
