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
use trace_writer::LibsqlTraceStorage;

use crate::db::{query, CliError, DbArgs, TABLES};
use crate::Outcome;

/// Clears the terminal and moves the cursor home, so each frame replaces
/// the last.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Where the counts come from.
enum Reader {
    /// A local file on a read-only connection: never the write lock.
    File(Connection),
    /// A server, through the crate's own open (which takes a token out of
    /// the URL and never shows it); reads take no lock there.
    Server(Box<LibsqlTraceStorage>),
}

/// Opens the database for reading.
async fn open(db: &DbArgs) -> Result<Reader, CliError> {
    let Some(path) = db.local_path() else {
        // `:memory:` and a missing table are refused here too.
        return Ok(Reader::Server(Box::new(db.open_existing().await?)));
    };
    db.require_existing()?;
    let cannot = |e: libsql::Error| CliError::new(format!("cannot open `{}`: {e}", db.shown()));
    let database = Builder::new_local(path)
        .flags(OpenFlags::SQLITE_OPEN_READ_ONLY)
        .build()
        .await
        .map_err(cannot)?;
    Ok(Reader::File(database.connect().map_err(cannot)?))
}

/// One count of every table, in the order of [`TABLES`].
async fn count(reader: &Reader) -> Result<Vec<i64>, CliError> {
    let sql = format!(
        "SELECT {}",
        TABLES
            .iter()
            .map(|t| format!("(SELECT COUNT(*) FROM {t}) AS {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match reader {
        Reader::File(conn) => {
            let read = async {
                let mut rows = conn.query(&sql, ()).await?;
                let mut counts = Vec::with_capacity(TABLES.len());
                if let Some(row) = rows.next().await? {
                    for i in 0..TABLES.len() {
                        counts.push(row.get::<i64>(i as i32)?);
                    }
                }
                Ok::<_, libsql::Error>(counts)
            };
            read.await.map_err(|e| CliError::new(e.to_string()))
        }
        Reader::Server(storage) => {
            let rows = query(storage, &sql, vec![]).await?;
            let row = rows.first();
            Ok(TABLES
                .iter()
                .map(|t| row.and_then(|r| r[*t].as_i64()).unwrap_or(0))
                .collect())
        }
    }
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
    let reader = open(db).await?;
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, Vec<i64>)> = None;
    let mut shown = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let counts = count(&reader)
            .await
            .map_err(|e| CliError::new(format!("cannot read `{}`: {}", db.shown(), e.message())))?;
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
