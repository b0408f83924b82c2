//! `trace-writer`: the operators' command-line tool for trace databases.
//!
//! Four commands, each against the database named by `--db`:
//!
//! - **`replay`** applies a spill file (the JSON-lines file the writer
//!   writes when it cannot commit: past `close()`'s deadline, or after a
//!   fatal error) or a dead-letter file (the operations the database refused,
//!   in the same format, each line with its cause), and prints what it did:
//!   operations read, rows inserted, rows already there (duplicates),
//!   updates, and each refused line with its number and cause. Replaying a
//!   file twice inserts nothing the second time. A progress bar shows on a
//!   terminal; a remote database gets the file in chunks, one request and
//!   one transaction each.
//!
//!   ```text
//!   trace-writer replay traces.db.spill-1764168000-4242-9f3c0a1b2c3d4e5f.jsonl --db traces.db
//!   ```
//!
//!   The database must exist unless `--create` is given, so that a mistyped
//!   path does not file the rows into a new, empty database.
//!
//! - **`check`** runs `PRAGMA integrity_check` and looks for dangling
//!   references: events and messages whose `timestep_id` names no step or a
//!   step of another session; rows of any table whose `session_id` names no
//!   session; event rewards whose event or message does not exist. It prints
//!   each check with its count and up to ten examples. It never creates a
//!   database or a table.
//!
//!   ```text
//!   trace-writer check --db traces.db
//!   ```
//!
//! - **`stats`** prints the rows per table and one line per session (id,
//!   creation time, steps, events, messages, counted from the rows rather
//!   than taken from the stored counts), newest first, at most `--limit`.
//!
//!   ```text
//!   trace-writer stats --db traces.db --limit 50
//!   ```
//!
//! - **`watch`** shows the rows per table and their rate, refreshed every
//!   second (`--interval`), until Ctrl-C (or `--count` frames). It opens a
//!   local file read-only and never takes the write lock, so it can watch a
//!   database while a writer fills it.
//!
//!   ```text
//!   trace-writer watch --db traces.db
//!   ```
//!
//! # Databases
//! `--db` takes a file path, a `file:` URL, `:memory:`, or a remote URL
//! (`libsql://`, `http://`, `https://`, `ws://`, `wss://`). A remote server's
//! token comes from `--auth-token`, else from `TRACE_WRITER_AUTH_TOKEN`, else
//! from `LIBSQL_AUTH_TOKEN` or `TURSO_AUTH_TOKEN` (the names
//! `StorageConfig::from_env` reads). The token is never printed.
//!
//! ```text
//! TRACE_WRITER_AUTH_TOKEN=... trace-writer stats --db libsql://traces.example.io
//! ```
//!
//! # Exit status
//! `0`: done, nothing wrong found. `1`: `check` found a problem, or `replay`
//! refused some lines. `2`: an error (bad arguments, a missing file, an
//! unreachable database).
//!
//! # Layout
//! `db.rs` opens the database and runs queries;
//! `replay.rs`, `check.rs`, `stats.rs` and `watch.rs` hold one command each.
#![forbid(unsafe_code)]

/// `println!` that returns a `CliError` instead of panicking when stdout is
/// closed (as in `trace-writer stats | head`). Needs a `Result<_, CliError>`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::db::say(format_args!($($arg)*))?
    };
}

mod check;
mod db;
mod replay;
mod stats;
mod watch;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::db::{CliError, DbArgs};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "trace-writer",
    version,
    about = "Replay spill files into, check and summarise trace databases",
    long_about = "Replay spill files into, check and summarise trace databases \
                  written by the trace-writer crate.",
    after_help = "Exit status: 0 when all is well, 1 when `check` finds a problem or \
                  `replay` refuses lines, 2 on an error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply a spill file (what the writer could not commit) or a
    /// dead-letter file (what the database refused) and print what was
    /// applied.
    ///
    /// Rows already in the database are skipped, so replaying twice is safe.
    /// Exits 1 if the database refused some lines (each is listed).
    Replay(ReplayArgs),
    /// Run `PRAGMA integrity_check` and look for dangling references.
    ///
    /// Exits 1 if the database is damaged or any row names a session, step,
    /// event or message that does not exist. Never creates anything.
    Check(CheckArgs),
    /// Print the rows per table and the sessions, newest first.
    Stats(StatsArgs),
    /// Show the rows per table and their rate, refreshed until Ctrl-C.
    ///
    /// Opens a local file read-only: it never takes the write lock.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
struct WatchArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
    /// Stop after this many refreshes (by default, run until Ctrl-C).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// A refresh interval: a finite number of seconds, at least 0.01.
fn parse_interval(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if secs.is_finite() && (0.01..=86_400.0).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("expected seconds between 0.01 and 86400, got {s}"))
    }
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// The spill or dead-letter file (JSON lines).
    #[arg(value_name = "SPILL_FILE")]
    spill_file: PathBuf,
    #[command(flatten)]
    db: DbArgs,
    /// Create the database file (and its tables) if it does not exist.
    #[arg(long)]
    create: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    db: DbArgs,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    db: DbArgs,
    /// List at most this many sessions.
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: u32,
}

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Nothing wrong found: exit 0.
    Clean,
    /// Problems found and reported on stdout: exit 1.
    Problems,
}

fn main() -> ExitCode {
    // Bad arguments print clap's usage and exit 2; --help and --version exit 0.
    let cli = Cli::parse();
    let token = match &cli.command {
        Command::Replay(a) => a.db.token(),
        Command::Check(a) => a.db.token(),
        Command::Stats(a) => a.db.token(),
        Command::Watch(a) => a.db.token(),
    };
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(e) => {
            if !e.is_quiet() {
                // Nothing more can be done if stderr is gone too.
                let _ = writeln!(std::io::stderr(), "error: {}", e.redacted(token.as_deref()));
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<Outcome, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        match cli.command {
            Command::Replay(a) => replay::run(&a.db, &a.spill_file, a.create).await,
            Command::Check(a) => check::run(&a.db).await,
            Command::Stats(a) => stats::run(&a.db, a.limit).await,
            Command::Watch(a) => {
                let interval = std::time::Duration::from_secs_f64(a.interval);
                watch::run(&a.db, interval, a.count).await
            }
        }
    })
}
