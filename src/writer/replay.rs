//! Replaying a kept file: [`replay_spill_file`] applies a spill or
//! dead-letter file (written by `spill.rs`) to a database, idempotently.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value as Json;

use crate::db::exec::Replayed;
use crate::db::hrana::HranaClient;
use crate::db::tx::{RemoteOutcome, RemoteTx};
use crate::db::{self, Executor, Op};
use crate::error::{DbError, ErrorClass, TracingError};
use crate::storage::StorageConfig;
use crate::writer::spill::op_from_json;

/// What [`replay_spill_file`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Lines read from the file (operations, and lines that were not).
    pub operations: usize,
    /// Rows that were new to the database.
    pub inserted: usize,
    /// Rows that were there already: applied by an earlier replay, or
    /// committed before the spill (a step created elsewhere counts here).
    pub duplicates: usize,
    /// Update operations applied (they are idempotent).
    pub updates: usize,
    /// Lines that were not applied, each with its line number and cause.
    pub refused: Vec<RefusedLine>,
}

/// A line of a spill file that [`replay_spill_file`] did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedLine {
    /// 1-based line number in the spill file.
    pub line: usize,
    /// The operation (`insert_event`, …), or `unreadable` for a line that is
    /// not a spilled operation.
    pub kind: String,
    /// Why: the database's error, or what was wrong with the line.
    pub cause: String,
}

/// Applies a spill file written by a `close()` (or a drop) that ran out of
/// time, in one transaction. Ids were assigned before the spill and are
/// kept, so replaying the same file twice duplicates nothing: a row that is
/// already there is counted in [`ReplayReport::duplicates`]. A line the
/// database refuses (a constraint, a trigger) or that cannot be read is
/// listed in [`ReplayReport::refused`] with its line number and cause, and
/// the replay goes on with the next line.
///
/// The file is read on a blocking thread, not on the runtime's workers.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let spill = dir.path().join("empty.jsonl");
/// std::fs::write(&spill, "").unwrap();
/// let report = trace_writer::replay_spill_file(trace_writer::StorageConfig::memory(), &spill).await?;
/// assert_eq!(report.operations, 0);
/// assert!(report.refused.is_empty());
/// # Ok::<(), trace_writer::TracingError>(()) }).unwrap();
/// ```
///
/// # Errors
/// `InvalidInput` when the file cannot be read; `Database` when the
/// database cannot be opened, or fails in a way that is not one line's
/// fault (then nothing was applied, and the replay can be run again).
pub async fn replay_spill_file(
    storage: StorageConfig,
    path: impl AsRef<Path>,
) -> Result<ReplayReport, TracingError> {
    replay_spill_file_with_progress(storage, path, |_, _| {}).await
}

/// [`replay_spill_file`], calling `progress(done, total)` as operations are
/// applied (`trace-writer replay` draws its progress bar with it).
///
/// On a local database the file is applied in one transaction, and
/// `progress` is called once it committed. On a remote server it goes
/// through the batch client in chunks of whole lines (up to 1,000
/// operations or about 4 MB each), one request and one transaction per
/// chunk, and `progress` is called after each: a large file costs one round
/// trip per chunk, not two per row, and a transient fault (retried up to 8
/// times with backoff) costs one chunk, not the whole replay. Each chunk is
/// idempotent as the whole file is, so a replay that failed half-way can be
/// run again: what was applied counts as duplicates.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let spill = dir.path().join("empty.jsonl");
/// std::fs::write(&spill, "").unwrap();
/// let mut calls = Vec::new();
/// let report = trace_writer::replay_spill_file_with_progress(
///     trace_writer::StorageConfig::memory(),
///     &spill,
///     |done, total| calls.push((done, total)),
/// )
/// .await?;
/// assert_eq!(report.operations, 0);
/// assert_eq!(calls, vec![(0, 0)]);
/// # Ok::<(), trace_writer::TracingError>(()) }).unwrap();
/// ```
///
/// # Errors
/// As [`replay_spill_file`]. On a remote server the error says how many
/// operations were applied before it.
pub async fn replay_spill_file_with_progress(
    storage: StorageConfig,
    path: impl AsRef<Path>,
    mut progress: impl FnMut(usize, usize) + Send,
) -> Result<ReplayReport, TracingError> {
    let path = path.as_ref().to_path_buf();
    let lines = match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(move || read_spill(&path))
            .await
            .map_err(|e| TracingError::Internal(format!("reading the spill file: {e}")))??,
        Err(_) => read_spill(&path)?,
    };
    let mut report = ReplayReport {
        operations: lines.len(),
        ..ReplayReport::default()
    };
    let mut ops = Vec::with_capacity(lines.len());
    for (line, parsed) in lines {
        match parsed {
            Ok(op) => ops.push((line, op)),
            Err(cause) => report.refused.push(RefusedLine {
                line,
                kind: "unreadable".into(),
                cause,
            }),
        }
    }
    let opened = db::open(&storage).await?;
    if let Some(client) = opened.pipeline.clone() {
        replay_remote(&client, &ops, &mut report, &mut progress).await?;
        report.refused.sort_by_key(|r| r.line);
        return Ok(report);
    }
    let total = ops.len();
    let mut exec = Executor::new(opened.conn.clone(), opened.remote);
    loop {
        let mut attempt = Applied::default();
        let result =
            db::transaction(&opened.conn, apply_lines(&mut exec, &ops, &mut attempt)).await;
        match result {
            Ok(()) => {
                report.inserted = attempt.inserted;
                report.duplicates = attempt.duplicates;
                report.updates = attempt.updates;
                report.refused.extend(attempt.refused);
                report.refused.sort_by_key(|r| r.line);
                progress(total, total);
                return Ok(report);
            }
            // SQLite rolled the transaction back over a refused line: start
            // again without it (and without those found before it).
            Err(ReplayError::Restart(refused)) => {
                let skip: Vec<usize> = refused.iter().map(|r| r.line).collect();
                ops.retain(|(line, _)| !skip.contains(line));
                report.refused.extend(refused);
            }
            Err(ReplayError::Db(e)) => return Err(e.into()),
        }
    }
}

/// Operations per request of a remote replay, at most.
const REPLAY_CHUNK_OPS: usize = 1000;
/// Bytes of values per request of a remote replay, about (a chunk holds at
/// least one operation).
const REPLAY_CHUNK_BYTES: usize = 4 << 20;
/// Tries of one chunk after transient faults.
const REPLAY_TRIES: u32 = 8;

/// Replays `ops` on a remote server in chunks, one request and one
/// transaction each.
async fn replay_remote(
    client: &HranaClient,
    ops: &[(usize, Op)],
    report: &mut ReplayReport,
    progress: &mut (impl FnMut(usize, usize) + Send),
) -> Result<(), TracingError> {
    let total = ops.len();
    let mut done = 0;
    progress(done, total);
    let mut rest = ops;
    while !rest.is_empty() {
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len() && n < REPLAY_CHUNK_OPS && (n == 0 || bytes < REPLAY_CHUNK_BYTES) {
            bytes += rest[n].1.size_bytes();
            n += 1;
        }
        let (chunk, tail) = rest.split_at(n);
        replay_chunk(client, chunk, report).await.map_err(|e| {
            TracingError::Database(format!(
                "replayed {done} of {total} operations, then: {e} (run the replay again: \
                 what was applied counts as duplicates)"
            ))
        })?;
        done += n;
        progress(done, total);
        rest = tail;
    }
    Ok(())
}

/// One chunk of a remote replay, in one transaction: refused lines are
/// reported and left out, and the rest sent again; transient faults are
/// retried with backoff.
async fn replay_chunk(
    client: &HranaClient,
    chunk: &[(usize, Op)],
    report: &mut ReplayReport,
) -> Result<(), DbError> {
    let mut live: Vec<&(usize, Op)> = chunk.iter().collect();
    let mut backoff = std::time::Duration::from_millis(100);
    let mut tries = 0;
    while !live.is_empty() {
        let tx = RemoteTx::new(
            live.iter()
                .map(|(_, op)| Executor::replay_stmt(op))
                .collect(),
        );
        let answer = match client.batch(&tx.steps).await {
            Ok(result) => tx.outcome(result),
            Err(e) => Err(e),
        };
        let error = match answer {
            Ok(RemoteOutcome::Committed(results)) => {
                for ((_, op), result) in live.iter().zip(results) {
                    match op {
                        Op::Insert { .. } if result.rows.is_empty() => report.duplicates += 1,
                        Op::Insert { .. } => report.inserted += 1,
                        _ => report.updates += 1,
                    }
                }
                return Ok(());
            }
            Ok(RemoteOutcome::Failed(failed)) => {
                let mut other = None;
                let mut refused = Vec::new();
                for (i, e) in failed {
                    if e.class == ErrorClass::Operation {
                        if let Some((line, op)) = live.get(i) {
                            report.refused.push(RefusedLine {
                                line: *line,
                                kind: op.kind().to_string(),
                                cause: e.message,
                            });
                        }
                        refused.push(i);
                    } else {
                        other.get_or_insert(e);
                    }
                }
                for i in refused.into_iter().rev() {
                    live.remove(i);
                }
                match other {
                    Some(e) => e,
                    None => continue,
                }
            }
            // Changed nothing (a replay is never sent behind another).
            Ok(RemoteOutcome::RanFirst) => continue,
            Err(e) => e,
        };
        if !error.is_transient() || tries + 1 >= REPLAY_TRIES {
            return Err(error);
        }
        tries += 1;
        tracing::warn!(target: "trace_writer", error = %error, ?backoff,
            "transient fault during a replay; sending the chunk again");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
    Ok(())
}

/// Counts of one replay attempt.
#[derive(Default)]
struct Applied {
    inserted: usize,
    duplicates: usize,
    updates: usize,
    refused: Vec<RefusedLine>,
}

enum ReplayError {
    /// SQLite rolled back the transaction after these refused lines.
    Restart(Vec<RefusedLine>),
    Db(DbError),
}

impl From<DbError> for ReplayError {
    fn from(e: DbError) -> Self {
        ReplayError::Db(e)
    }
}

async fn apply_lines(
    exec: &mut Executor,
    ops: &[(usize, Op)],
    out: &mut Applied,
) -> Result<(), ReplayError> {
    for (line, op) in ops {
        match exec.replay(op).await {
            Ok(Replayed::Inserted) => out.inserted += 1,
            Ok(Replayed::Duplicate) => out.duplicates += 1,
            Ok(Replayed::Updated) => out.updates += 1,
            Err(e) if e.class == ErrorClass::Operation => {
                out.refused.push(RefusedLine {
                    line: *line,
                    kind: op.kind().to_string(),
                    cause: e.message,
                });
                if !exec.in_transaction() {
                    return Err(ReplayError::Restart(std::mem::take(&mut out.refused)));
                }
            }
            Err(e) => return Err(ReplayError::Db(e)),
        }
    }
    Ok(())
}

/// The spill file's lines, numbered from 1, each parsed or with why not.
type SpillLines = Vec<(usize, Result<Op, String>)>;

fn read_spill(path: &Path) -> Result<SpillLines, TracingError> {
    let file = std::fs::File::open(path)
        .map_err(|e| TracingError::InvalidInput(format!("cannot open {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| {
            TracingError::InvalidInput(format!("cannot read {}: {e}", path.display()))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Json>(&line)
            .map_err(|e| e.to_string())
            .and_then(|j| op_from_json(&j).map_err(|e| e.to_string()));
        out.push((n + 1, parsed));
    }
    Ok(out)
}
