//! Spill files: what `close()` could not commit in time, one operation per
//! JSON line, and [`replay_spill_file`] to apply them later.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use libsql::Value;
use serde_json::{json, Value as Json};

use crate::db::{self, Executor, Op, Table};
use crate::error::DbError;
use crate::error::TracingError;
use crate::storage::{DbKind, StorageConfig};
use crate::writer::config::WriterConfig;

/// The spill file used when none is configured: beside a file database, or
/// in the temp folder for `:memory:` and remote ones.
pub(crate) fn default_path(config: &WriterConfig, storage: &StorageConfig) -> PathBuf {
    if let Some(p) = &config.spill_path {
        return p.clone();
    }
    match storage.kind() {
        Ok(DbKind::File(path)) => {
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".spill.jsonl");
            path.with_file_name(name)
        }
        _ => std::env::temp_dir().join(format!("trace-writer-{}.spill.jsonl", std::process::id())),
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Operations read from the file.
    pub operations: usize,
    /// Rows that were new to the database.
    pub inserted: usize,
}

/// Applies a spill file written by a `close()` that ran out of time, in one
/// transaction. Ids were assigned before the spill and are kept, so replaying
/// the same file twice duplicates nothing.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let spill = dir.path().join("empty.jsonl");
/// std::fs::write(&spill, "").unwrap();
/// let report = trace_writer::replay_spill_file(trace_writer::StorageConfig::memory(), &spill).await?;
/// assert_eq!(report.operations, 0);
/// # Ok::<(), trace_writer::TracingError>(()) }).unwrap();
/// ```
///
/// # Errors
/// `Serialization` for a line that is not a spilled operation (nothing is
/// applied then), `Database` when the database refuses the batch.
pub async fn replay_spill_file(
    storage: StorageConfig,
    path: impl AsRef<Path>,
) -> Result<ReplayReport, TracingError> {
    let file = std::fs::File::open(path.as_ref()).map_err(|e| {
        TracingError::InvalidInput(format!("cannot open {}: {e}", path.as_ref().display()))
    })?;
    let mut ops = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TracingError::InvalidInput(e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let j: Json = serde_json::from_str(&line)
            .map_err(|e| TracingError::Serialization(format!("line {}: {e}", n + 1)))?;
        ops.push(op_from_json(&j)?);
    }
    let opened = db::open(&storage).await?;
    let mut exec = Executor::new(opened.conn.clone(), opened.remote);
    let inserted = db::transaction(&opened.conn, async {
        let mut inserted = 0;
        for op in &ops {
            inserted += exec.apply_ignoring_duplicates(op).await?;
        }
        Ok::<_, DbError>(inserted)
    })
    .await?;
    Ok(ReplayReport {
        operations: ops.len(),
        inserted,
    })
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
