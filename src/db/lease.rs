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
//! the largest id in the table, and read it back. This file only builds
//! them and reads the block from the answer; the executor runs them
//! (`Executor::lease_blocks`), in one request on a remote server.

use std::ops::Range;

use libsql::Value;

use crate::db::columns::Table;
use crate::db::hrana::{hrana_integer, Arg, StepResult, Stmt};
use crate::db::op::text;
use crate::error::{DbError, ErrorClass};

/// Adds the table's `sqlite_sequence` row if it has none.
const ENSURE_ROW: &str = "INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0 \
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)";

/// Which of [`lease_statements`] reads the block's end.
pub(crate) const READS_BLOCK: usize = 2;

/// The lease's three statements for `n` ids of `table`; the third (at
/// [`READS_BLOCK`]) reads the block's end.
pub(crate) fn lease_statements(table: Table, n: i64) -> [Stmt<'static>; 3] {
    // Each statement gets exactly the parameters it names: a server refuses
    // extra ones.
    let name = table.name();
    let named = || vec![Arg::owned(text(name))];
    [
        Stmt {
            sql: ENSURE_ROW.into(),
            args: named(),
            want_rows: false,
        },
        Stmt {
            sql: format!(
                "UPDATE sqlite_sequence SET seq = MAX(seq, (SELECT COALESCE(MAX(id), 0) \
                 FROM {name})) + ?2 WHERE name = ?1"
            )
            .into(),
            args: vec![Arg::owned(text(name)), Arg::owned(Value::Integer(n))],
            want_rows: false,
        },
        Stmt::query("SELECT seq FROM sqlite_sequence WHERE name = ?1", named()),
    ]
}

/// The block of `n` ids of `table` that ends at `last` (the raised
/// `sqlite_sequence` value).
///
/// # Errors
/// `Fatal` if there is no value, or the ids are used up.
pub(crate) fn block(table: Table, last: Option<i64>, n: i64) -> Result<Range<i64>, DbError> {
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

/// The block a committed remote lease reserved, from the result of its
/// statement at [`READS_BLOCK`].
///
/// # Errors
/// `Fatal` if the result holds no sequence value.
pub(crate) fn remote_block(
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
