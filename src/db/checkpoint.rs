//! WAL checkpoints: the second connection that runs them, and the pragma.
//!
//! A local file in WAL mode appends every commit to its `-wal`; a checkpoint
//! copies those pages back into the database file and syncs it. SQLite runs
//! one inline, in the committing connection, once the WAL passes
//! `wal_autocheckpoint` pages. The writer instead runs them on a second
//! connection of its own (`crate::writer::actor::checkpoint`), so that the
//! copy and the sync overlap the next batch. This file holds what that
//! needs from the database layer.

use std::path::Path;
use std::sync::Arc;

use libsql::Connection;

use crate::db::foreign::{self, Findings, ForeignWatch};
use crate::db::{open, Opened};
use crate::error::DbError;
use crate::storage::StorageConfig;

/// A second connection to a file database, its handles claimed as this
/// crate's (see `foreign.rs`). Keep the watch until every connection of the
/// writer to the file is closed: SQLite keeps a closed connection's handles
/// open while another connection of the process holds a lock on the file.
pub(crate) struct WalConnection {
    pub(crate) conn: Connection,
    pub(crate) watch: ForeignWatch,
}

/// What a checkpoint saw, in WAL frames (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpointed {
    /// Another connection's checkpoint was running: this one did nothing,
    /// and the counts say nothing.
    pub(crate) busy: bool,
    /// Frames in the WAL.
    pub(crate) log: i64,
    /// Frames of those now copied into the database file.
    pub(crate) copied: i64,
}

impl Checkpointed {
    /// Every frame is in the database file: the next write transaction
    /// starts the WAL over from its beginning.
    pub(crate) fn complete(self) -> bool {
        !self.busy && self.copied >= self.log
    }
}

/// Opens a second connection to the file `opened` has open, with the
/// storage's busy timeout and `synchronous` setting (the checkpoint syncs
/// the file as the storage asks), and opens its WAL (a read does), so that
/// every handle it holds is claimed before a scan for foreign handles could
/// see it.
///
/// # Errors
/// The connection's, a pragma's or the read's error.
pub(crate) async fn second_connection(
    opened: &Opened,
    storage: &StorageConfig,
    path: &Path,
    findings: Arc<Findings>,
) -> Result<WalConnection, DbError> {
    let open = async {
        let conn = opened.db.connect()?;
        open::connection_settings(&conn, storage).await?;
        let mut rows = conn
            .query("SELECT 1 FROM sqlite_schema LIMIT 1", ())
            .await?;
        while rows.next().await?.is_some() {}
        drop(rows);
        Ok::<_, DbError>(conn)
    };
    let (conn, watch) = foreign::open_claimed(path, findings, open).await?;
    Ok(WalConnection { conn, watch })
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can without waiting for
/// any other connection, and says how far it got.
///
/// # Errors
/// The pragma's error. Another connection's checkpoint in progress is not
/// one: the answer says `busy`.
pub(crate) async fn passive(conn: &Connection) -> Result<Checkpointed, DbError> {
    let mut rows = conn.query("PRAGMA wal_checkpoint(PASSIVE)", ()).await?;
    let mut out = Checkpointed {
        busy: true,
        log: 0,
        copied: 0,
    };
    if let Some(row) = rows.next().await? {
        // (busy, frames in the WAL, frames copied); -1 and -1 when the
        // database is not in WAL mode.
        out = Checkpointed {
            busy: row.get::<i64>(0)? != 0,
            log: row.get::<i64>(1)?.max(0),
            copied: row.get::<i64>(2)?.max(0),
        };
    }
    while rows.next().await?.is_some() {}
    Ok(out)
}

/// Sets `wal_autocheckpoint` (0: the connection never checkpoints by
/// itself).
///
/// # Errors
/// The pragma's error.
pub(crate) async fn set_autocheckpoint(conn: &Connection, pages: u32) -> Result<(), DbError> {
    // It answers with a row, so it is a query.
    let mut rows = conn
        .query(&format!("PRAGMA wal_autocheckpoint = {pages}"), ())
        .await?;
    while rows.next().await?.is_some() {}
    Ok(())
}
