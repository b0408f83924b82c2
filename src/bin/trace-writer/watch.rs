//! `trace-writer watch --db URL`: a live view of a database being written.
//!
//! Every `--interval` it counts the rows of each trace table and prints them
//! with their rate since the last count, until Ctrl-C (or `--count` frames).
//! A local file is opened read-only (`SQLITE_OPEN_READONLY`), so the view
//! never takes the write lock: in WAL mode it never delays a writer at all,
//! and in rollback-journal mode only as any reader does, for the moment of
//! each count.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use libsql::{Builder, Connection, OpenFlags};

use crate::db::{CliError, DbArgs, TABLES};
use crate::Outcome;

/// Clears the terminal and moves the cursor home, so each frame replaces
/// the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Opens the database for reading only.
async fn open(db: &DbArgs) -> Result<Connection, CliError> {
    if db.is_memory() {
        return Err(CliError::new(
            "`:memory:` opens a new, empty database: give a file path or a server url",
        ));
    }
    db.require_existing()?;
    let cannot = |e: libsql::Error| CliError::new(format!("cannot open `{}`: {e}", db.shown()));
    let database = match db.local_path() {
        Some(path) => {
            Builder::new_local(path)
                .flags(OpenFlags::SQLITE_OPEN_READ_ONLY)
                .build()
                .await
        }
        None => {
            Builder::new_remote(db.db.clone(), db.token().unwrap_or_default())
                .build()
                .await
        }
    }
    .map_err(cannot)?;
    database.connect().map_err(cannot)
}

/// One count of every table, in the order of [`TABLES`].
async fn count(conn: &Connection) -> Result<Vec<i64>, libsql::Error> {
    let sql = format!(
        "SELECT {}",
        TABLES
            .iter()
            .map(|t| format!("(SELECT COUNT(*) FROM {t})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rows = conn.query(&sql, ()).await?;
    let mut counts = Vec::with_capacity(TABLES.len());
    if let Some(row) = rows.next().await? {
        for i in 0..TABLES.len() {
            counts.push(row.get::<i64>(i as i32)?);
        }
    }
    Ok(counts)
}

/// Renders one frame: each table's rows and rate.
fn frame(db: &DbArgs, interval: Duration, counts: &[i64], rates: Option<&[f64]>) -> String {
    let width = TABLES.iter().map(|t| t.len()).max().unwrap_or_default();
    let mut out = format!(
        "trace-writer watch: {}  (every {:.1} s, Ctrl-C to stop)  {}\n\n",
        db.shown(),
        interval.as_secs_f64(),
        chrono::Utc::now().format("%H:%M:%S")
    );
    out.push_str(&format!(
        "  {:<width$}  {:>12}  {:>10}\n",
        "table", "rows", "rows/s"
    ));
    for (i, table) in TABLES.iter().enumerate() {
        let rate = rates
            .and_then(|r| r.get(i))
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"));
        out.push_str(&format!(
            "  {table:<width$}  {:>12}  {rate:>10}\n",
            counts[i]
        ));
    }
    out
}

/// Shows the counts every `interval` until Ctrl-C, or `frames` times.
pub(crate) async fn run(
    db: &DbArgs,
    interval: Duration,
    frames: Option<u64>,
) -> Result<Outcome, CliError> {
    let conn = open(db).await?;
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, Vec<i64>)> = None;
    let mut shown = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let counts = count(&conn)
            .await
            .map_err(|e| CliError::new(format!("cannot read `{}`: {e}", db.shown())))?;
        let now = Instant::now();
        let rates: Option<Vec<f64>> = last.as_ref().map(|(at, before)| {
            let secs = now.duration_since(*at).as_secs_f64().max(f64::EPSILON);
            counts
                .iter()
                .zip(before)
                .map(|(n, b)| (n - b) as f64 / secs)
                .collect()
        });
        let text = frame(db, interval, &counts, rates.as_deref());
        if tty {
            say!("{CLEAR}{text}");
        } else {
            say!("{text}");
        }
        last = Some((now, counts));
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(Outcome::Clean);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return Ok(Outcome::Clean),
        }
    }
}
