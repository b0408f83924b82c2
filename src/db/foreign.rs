//! A second SQLite library in this process, found through `/proc/self/fd`.
//!
//! POSIX locks belong to the process, not to the file descriptor, so two
//! SQLite libraries in one process (Python's `sqlite3` beside this crate's
//! libsql, a system `libsqlite3` loaded into the same program) cannot see
//! each other's locks: each can commit over the other, and closing one's
//! connection drops the other's locks. SQLite cannot detect it; this module
//! does, on Linux, by looking for handles to the database file or its
//! `-wal` that no connection of this crate opened.
//!
//! Which handles are ours: [`open_claimed`] notes the handles to the file
//! before and after one of this crate's connections opens it, and claims the
//! new ones, process-wide, until that connection is dropped. Every other
//! handle to the file is foreign. (A handle opened by another library in
//! the same instant, on another thread, would be taken for ours: the check
//! is a warning, not a lock.)

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a connection that writes looks again.
const RESCAN: Duration = Duration::from_secs(1);

/// Handles claimed by this crate's connections, with how many claims hold
/// each (a handle number is claimed again only after it was closed and
/// reused, so the count is 1 but for a race).
static CLAIMED: Mutex<Option<HashMap<i32, usize>>> = Mutex::new(None);

fn claimed() -> std::sync::MutexGuard<'static, Option<HashMap<i32, usize>>> {
    CLAIMED.lock().unwrap_or_else(|p| p.into_inner())
}

/// What was found, shared with whoever reports it (the writer's stats and
/// `take_foreign_sqlite_warnings`).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    /// Files reported, each once.
    count: AtomicU64,
    /// Warnings not taken yet.
    pending: Mutex<Vec<String>>,
}

impl Findings {
    /// How many files were reported.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The warnings not taken yet, each returned once.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn report(&self, text: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }
}

/// The files of a database that a second library must not have open: the
/// database and its `-wal`, by their absolute paths (the file may not exist
/// yet, so its folder is made absolute).
fn watched_files(path: &Path) -> Vec<PathBuf> {
    let absolute = match std::fs::canonicalize(path) {
        Ok(absolute) => absolute,
        Err(_) => match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                match std::fs::canonicalize(dir) {
                    Ok(dir) => dir.join(name),
                    Err(_) => return Vec::new(),
                }
            }
            _ => return Vec::new(),
        },
    };
    let mut wal = absolute.as_os_str().to_os_string();
    wal.push("-wal");
    vec![absolute, PathBuf::from(wal)]
}

/// This process's handles to any of `files`, as `(handle, file)`.
#[cfg(target_os = "linux")]
fn handles_to(files: &[PathBuf]) -> Vec<(i32, PathBuf)> {
    if files.is_empty() {
        return Vec::new();
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if let Some(file) = files.iter().find(|f| **f == target) {
                out.push((fd, file.clone()));
            }
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
fn handles_to(_files: &[PathBuf]) -> Vec<(i32, PathBuf)> {
    Vec::new()
}

/// Opens a connection with `open` and claims the handles it opened to the
/// database's files; returns what `open` returned and the watch.
pub(crate) async fn open_claimed<T, E>(
    path: &Path,
    findings: Arc<Findings>,
    open: impl std::future::Future<Output = Result<T, E>>,
) -> Result<(T, ForeignWatch), E> {
    let files = watched_files(path);
    let before: HashSet<i32> = handles_to(&files).into_iter().map(|(fd, _)| fd).collect();
    let opened = open.await?;
    let mine: Vec<i32> = handles_to(&files)
        .into_iter()
        .map(|(fd, _)| fd)
        .filter(|fd| !before.contains(fd))
        .collect();
    {
        let mut claimed = claimed();
        let claimed = claimed.get_or_insert_with(HashMap::new);
        for fd in &mine {
            *claimed.entry(*fd).or_default() += 1;
        }
    }
    let mut watch = ForeignWatch {
        files,
        mine,
        reported: HashSet::new(),
        last: Instant::now(),
        findings,
    };
    watch.scan();
    Ok((opened, watch))
}

/// One connection's watch for a second SQLite library on its database.
///
/// Drop it after the connection: its handles stay claimed until then.
#[derive(Debug)]
pub(crate) struct ForeignWatch {
    files: Vec<PathBuf>,
    /// The handles this connection claimed.
    mine: Vec<i32>,
    /// Files already reported.
    reported: HashSet<PathBuf>,
    last: Instant,
    findings: Arc<Findings>,
}

impl ForeignWatch {
    /// A watch that never finds anything (`:memory:`, remote databases).
    pub(crate) fn none(findings: Arc<Findings>) -> Self {
        Self {
            files: Vec::new(),
            mine: Vec::new(),
            reported: HashSet::new(),
            last: Instant::now(),
            findings,
        }
    }

    /// Takes over `other`'s claims: they last as long as this watch. For a
    /// second connection to the same file whose handles SQLite may keep
    /// open until the last connection of the process to it closes.
    pub(crate) fn absorb(&mut self, mut other: ForeignWatch) {
        self.mine.append(&mut other.mine);
    }

    /// Scans if the last scan is a second old or more.
    pub(crate) fn scan_if_due(&mut self) {
        if !self.files.is_empty() && self.last.elapsed() >= RESCAN {
            self.scan();
        }
    }

    /// Looks for handles to the database's files that no connection of
    /// this crate claimed, and reports each such file once: a `tracing`
    /// WARN, the count, and a warning for `take()`.
    pub(crate) fn scan(&mut self) {
        self.last = Instant::now();
        if self.files.len() == self.reported.len() {
            return;
        }
        let found = handles_to(&self.files);
        let claimed = claimed();
        let is_claimed = |fd: &i32| claimed.as_ref().and_then(|c| c.get(fd)).is_some();
        let foreign = found.into_iter().filter(|(fd, _)| !is_claimed(fd));
        let mut new = Vec::new();
        for (fd, file) in foreign {
            if self.reported.insert(file.clone()) {
                new.push((fd, file));
            }
        }
        drop(claimed);
        for (fd, file) in new {
            let text = format!(
                "another SQLite library in this process has {} open (file descriptor {fd}): \
                 POSIX locks belong to the process, so SQLite's locking cannot keep that \
                 library and this crate's connection apart. Either can commit over the other's \
                 transaction and silently lose committed rows, and closing its connection drops \
                 this connection's locks. Read through the writer's own query()/get_session() \
                 (aquery() in Python), or from another process",
                file.display()
            );
            tracing::warn!(target: "trace_writer", file = %file.display(), fd,
                "a second SQLite library has the database open in this process: {text}");
            self.findings.report(text);
        }
    }
}

impl Drop for ForeignWatch {
    fn drop(&mut self) {
        if self.mine.is_empty() {
            return;
        }
        let mut claimed = claimed();
        if let Some(claimed) = claimed.as_mut() {
            for fd in &self.mine {
                if let Some(n) = claimed.get_mut(fd) {
                    *n -= 1;
                    if *n == 0 {
                        claimed.remove(fd);
                    }
                }
            }
        }
    }
}
