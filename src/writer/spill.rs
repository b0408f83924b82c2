//! Spill files: what `close()` could not commit in time, one operation per
//! JSON line, and [`replay_spill_file`] to apply them later.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libsql::Value;
use serde_json::{json, Value as Json};

use crate::db::exec::Replayed;
use crate::db::{self, Executor, Op, Table};
use crate::error::{DbError, ErrorClass, TracingError};
use crate::storage::{DbKind, StorageConfig};
use crate::writer::config::WriterConfig;

/// The spill file used when none is configured: beside a file database, or
/// in the temp folder for `:memory:` and remote ones. Each writer instance
/// gets its own name (start time, process id and a per-process count), so
/// that writers sharing a database, or several in one process, never mix
/// their spills.
pub(crate) fn default_path(config: &WriterConfig, storage: &StorageConfig) -> PathBuf {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    if let Some(p) = &config.spill_path {
        return p.clone();
    }
    let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let unique = format!("{secs}-{}-{n}", std::process::id());
    match storage.kind() {
        Ok(DbKind::File(path)) => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(format!(".spill-{unique}.jsonl"));
            path.with_file_name(name)
        }
        _ => std::env::temp_dir().join(format!("trace-writer-{unique}.spill.jsonl")),
    }
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        // Finite by validation; serde_json writes `1.0`, so the type survives.
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Blob(b) => json!({ "blob": b }),
    }
}

fn json_value(j: &Json) -> Result<Value, TracingError> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Number(n) if n.is_f64() => Value::Real(n.as_f64().unwrap_or_default()),
        Json::Number(n) => Value::Integer(
            n.as_i64()
                .ok_or_else(|| TracingError::Serialization(format!("integer out of range: {n}")))?,
        ),
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(o) => match o.get("blob") {
            Some(b) => Value::Blob(serde_json::from_value(b.clone())?),
            None => return Err(TracingError::Serialization("unknown value object".into())),
        },
        other => {
            return Err(TracingError::Serialization(format!(
                "unexpected value {other}"
            )))
        }
    })
}

pub(crate) fn op_to_json(op: &Op) -> Json {
    let values = |v: &[Value]| Json::Array(v.iter().map(value_json).collect());
    match op {
        Op::Insert { table, values: v } => {
            json!({"op": "insert", "table": table.name(), "values": values(v)})
        }
        Op::UpdateTimestep { values: v } => json!({"op": "update_timestep", "values": values(v)}),
        Op::UpdateSessionCounts { session_id } => {
            json!({"op": "update_session_counts", "session_id": session_id})
        }
    }
}

pub(crate) fn op_from_json(j: &Json) -> Result<Op, TracingError> {
    let bad = |m: &str| TracingError::Serialization(format!("bad spill line: {m}"));
    let values = || -> Result<Vec<Value>, TracingError> {
        j.get("values")
            .and_then(Json::as_array)
            .ok_or_else(|| bad("no values"))?
            .iter()
            .map(json_value)
            .collect()
    };
    match j.get("op").and_then(Json::as_str) {
        Some("insert") => {
            let name = j.get("table").and_then(Json::as_str).unwrap_or_default();
            let table = Table::from_name(name).ok_or_else(|| bad("unknown table"))?;
            let values = values()?;
            if values.len() != table.columns().len() {
                return Err(bad("wrong number of values"));
            }
            Ok(Op::Insert { table, values })
        }
        Some("update_timestep") => Ok(Op::UpdateTimestep { values: values()? }),
        Some("update_session_counts") => Ok(Op::UpdateSessionCounts {
            session_id: j
                .get("session_id")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("no session_id"))?
                .to_string(),
        }),
        _ => Err(bad("unknown op")),
    }
}

/// Appends operations to the spill file and syncs it to disk.
pub(crate) fn append(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::new();
    for op in ops {
        serde_json::to_writer(&mut buf, &op_to_json(op))?;
        buf.push(b'\n');
    }
    file.write_all(&buf)?;
    file.sync_all()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_survive_json() {
        let op = Op::Insert {
            table: Table::Events,
            values: {
                let mut v = vec![Value::Null; Table::Events.columns().len()];
                v[0] = Value::Integer(7);
                v[1] = Value::Text("s".into());
                v[5] = Value::Real(1.0);
                v
            },
        };
        let back = op_from_json(&op_to_json(&op)).unwrap();
        assert_eq!(back, op);
        let op = Op::UpdateSessionCounts {
            session_id: "x".into(),
        };
        assert_eq!(op_from_json(&op_to_json(&op)).unwrap(), op);
        assert!(op_from_json(&json!({"op": "nope"})).is_err());
    }
}
