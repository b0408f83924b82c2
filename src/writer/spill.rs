//! Kept files: the spill file (operations the writer could not commit:
//! past `close()`'s deadline, or after a fatal error) and the dead-letter
//! file (operations the database refused), one operation per JSON line in
//! the same format; `replay.rs` applies either later.
//!
//! Both are private: created new (`create_new`), mode `0600`, under a name
//! with random bits, and, unless beside a file database, in a per-user
//! folder of mode `0700` (see [`default_paths`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use libsql::Value;
use serde_json::{json, Value as Json};

use crate::db::{Op, Table};
use crate::error::TracingError;
use crate::storage::{DbKind, StorageConfig};
use crate::writer::config::WriterConfig;

/// A writer's two kept files.
#[derive(Debug)]
pub(crate) struct KeptPaths {
    /// What could not be committed.
    pub(crate) spill: KeptFile,
    /// What the database refused.
    pub(crate) dead_letter: KeptFile,
}

/// The writer's spill and dead-letter files. Chosen once per writer, created
/// only when something is first written to them.
///
/// - `WriterConfig::spill_path`: the spill file there, the dead-letter file
///   beside it (`<spill>.dead-letter.jsonl`), unless `dead_letter_path` names it.
/// - `WriterConfig::spill_dir`: both in that folder (made `0700` if new).
/// - A file database: both beside it, `<db>.spill-<unique>.jsonl` and
///   `<db>.dead-letter-<unique>.jsonl`, where an operator looks for them
///   first, on the same disk and with the database's own trust.
/// - `:memory:` and remote databases: the per-user state folder
///   ([`private_dir`]), `<db>-<unique>.spill.jsonl` and
///   `<db>-<unique>.dead-letter.jsonl`.
///
/// `<unique>` is the start time, the process id and 64 random bits: each
/// writer instance has its own files, and no other user can guess a name.
pub(crate) fn default_paths(config: &WriterConfig, storage: &StorageConfig) -> KeptPaths {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let unique = format!("{secs}-{}-{}", std::process::id(), &random[..16]);
    let kind = storage.kind();
    let db_name = match &kind {
        Ok(DbKind::File(path)) => path
            .file_name()
            .map_or_else(|| "traces".into(), |n| n.to_string_lossy().into_owned()),
        Ok(DbKind::Memory) => "memory".into(),
        _ => "remote".into(),
    };
    let in_dir = |dir: &Path, private: bool| KeptPaths {
        spill: KeptFile::new(dir.join(format!("{db_name}-{unique}.spill.jsonl")), private),
        dead_letter: KeptFile::new(
            dir.join(format!("{db_name}-{unique}.dead-letter.jsonl")),
            private,
        ),
    };
    let mut paths = match (&config.spill_path, &config.spill_dir, &kind) {
        (Some(p), _, _) => {
            let mut dead = p.as_os_str().to_os_string();
            dead.push(".dead-letter.jsonl");
            KeptPaths {
                spill: KeptFile::new(p.clone(), false),
                dead_letter: KeptFile::new(PathBuf::from(dead), false),
            }
        }
        (None, Some(dir), _) => in_dir(dir, false),
        (None, None, Ok(DbKind::File(path))) => {
            let beside = |what: &str| {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".{what}-{unique}.jsonl"));
                KeptFile::new(path.with_file_name(name), false)
            };
            KeptPaths {
                spill: beside("spill"),
                dead_letter: beside("dead-letter"),
            }
        }
        (None, None, _) => in_dir(&private_dir(), true),
    };
    if let Some(p) = &config.dead_letter_path {
        paths.dead_letter = KeptFile::new(p.clone(), false);
    }
    paths
}

/// The per-user folder for kept files: `$XDG_STATE_HOME/trace-writer`, else
/// `~/.local/state/trace-writer`, else `trace-writer-<uid>` in the temp
/// folder. It is made (and kept) mode `0700` when first used.
pub(crate) fn private_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(state) = var("XDG_STATE_HOME") {
        return state.join("trace-writer");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local").join("state").join("trace-writer");
    }
    let user = current_uid().map_or_else(|| "user".to_string(), |u| u.to_string());
    std::env::temp_dir().join(format!("trace-writer-{user}"))
}

/// This process's user id, where the system says it without `unsafe`.
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(not(unix))]
fn current_uid() -> Option<u32> {
    None
}

/// Makes `dir` (and its missing parents) with mode `0700`, and checks that
/// it is a real folder of this user that no one else may enter; a folder
/// of ours with a looser mode is tightened.
#[cfg(unix)]
fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    let refuse = |why: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} {why}: refusing to keep traces in it", dir.display()),
        ))
    };
    if !meta.is_dir() {
        return refuse("is not a folder (a symbolic link?)");
    }
    if current_uid().is_some_and(|uid| uid != meta.uid()) {
        return refuse("belongs to another user");
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates a file that did not exist, readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A spill or dead-letter file: created on its first line, then appended to.
#[derive(Debug)]
pub(crate) struct KeptFile {
    path: PathBuf,
    /// The folder is the per-user one: make it `0700` and check it.
    private_dir: bool,
    file: Option<File>,
}

impl KeptFile {
    pub(crate) fn new(path: PathBuf, private_dir: bool) -> Self {
        Self {
            path,
            private_dir,
            file: None,
        }
    }

    /// Another file for the same lines: at this path if it is still free
    /// when first written, else beside it.
    pub(crate) fn beside(&self) -> Self {
        Self::new(self.path.clone(), self.private_dir)
    }

    /// Where the lines are (or will be) kept.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file, new: if the name is taken (a configured path used
    /// twice), a sibling with random bits is made instead, and `path()`
    /// names it from then on.
    fn create(&mut self) -> std::io::Result<File> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A folder of ours is checked every time; one the user named
            // is only made, private, when it does not exist.
            if self.private_dir || !dir.exists() {
                ensure_private_dir(dir)?;
            }
        }
        match create_private(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let random = uuid::Uuid::new_v4().simple().to_string();
                let mut name = self.path.as_os_str().to_os_string();
                name.push(format!(".{}.jsonl", &random[..16]));
                let file = create_private(Path::new(&name))?;
                self.path = PathBuf::from(name);
                Ok(file)
            }
            other => other,
        }
    }

    /// Appends operations, each with why it is kept, and syncs the file.
    pub(crate) fn append<'a>(
        &mut self,
        ops: impl IntoIterator<Item = (&'a Op, &'a str)>,
    ) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for (op, cause) in ops {
            let mut line = op_to_json(op);
            if let Json::Object(map) = &mut line {
                map.insert("cause".into(), Json::String(cause.to_string()));
            }
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        // Created on first use: a writer that never spills makes no file.
        let file = match self.file.take() {
            Some(file) => file,
            None => self.create()?,
        };
        let file = self.file.insert(file);
        file.write_all(&buf)?;
        file.sync_all()
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
