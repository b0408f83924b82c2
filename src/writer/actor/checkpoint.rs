//! WAL checkpoints beside the actor, on a thread of their own.
//!
//! Inline, SQLite copies the WAL back into the database file in the
//! connection that commits, and syncs it, once the WAL passes
//! `wal_autocheckpoint` pages: the actor waited for the copy and the disk.
//! With thousands of rollouts at once that was a large share of the actor's
//! time (docs/scale.md). Here the actor's connection never checkpoints;
//! once [`CHECKPOINT_AFTER`] bytes of rows were committed since the last
//! one, a commit wakes `trace-writer-wal`, which runs a PASSIVE checkpoint
//! on a second connection while the actor applies the next batch.
//!
//! A PASSIVE checkpoint never waits for the writer, so it copies what was
//! committed when it began, and the WAL can only start over from its
//! beginning when a write transaction begins with every frame copied.
//! While batches keep coming that never happens by itself, and the WAL
//! would grow for as long as they do. So once the WAL holds
//! [`RESTART_AT`] frames, the actor, before its next batch, waits (with a
//! deadline) for the checkpoint in progress and copies the rest itself:
//! about one batch, inline. Its next transaction then starts the WAL over.
//! The WAL stays under `RESTART_AT` frames and a few batches: the actor
//! also waits when the checkpoints fall more than [`MAX_LAG`] requests
//! behind, so their count of frames is never older than that.
//!
//! Failures lose nothing (every commit is in the WAL): each is counted
//! (`WriterStats::checkpoint_failures`), the first is logged as a warning
//! and kept for `recent_errors()`, and the next batch checkpoints inline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use libsql::Connection;

use crate::db::checkpoint::{self, WalConnection};
use crate::db::Opened;
use crate::error::DbError;
use crate::storage::{DbKind, JournalMode, StorageConfig};
use crate::writer::actor::Shared as WriterShared;
use crate::writer::stats::Counters;

/// The WAL's length, in frames (pages), past which the actor finishes the
/// checkpoint itself before its next batch, so that the WAL starts over:
/// 160 MB at 4 KiB pages.
pub(crate) const RESTART_AT: i64 = 40_000;

/// The longest the actor waits for a checkpoint in progress before it
/// copies the rest itself: one copies at most `RESTART_AT` frames and a
/// batch.
const WAIT_FOR_CHECKPOINT: Duration = Duration::from_secs(30);

/// Checkpoints asked for that one may fall behind before the actor waits
/// for it: so `log` is never older than this many requests (and the batch
/// being applied).
const MAX_LAG: u64 = 2;

/// Bytes of rows committed between two checkpoints: each syncs the file,
/// so a trickle of small batches does not sync once per commit. A batch of
/// thousands of rollouts is larger, and asks for one every time.
pub(crate) const CHECKPOINT_AFTER: usize = 8 << 20;

/// What the actor and the thread share.
#[derive(Default)]
struct State {
    /// A checkpoint was asked for and has not ended.
    running: bool,
    /// A commit came while one ran: run again once it ends.
    again: bool,
    /// Frames in the WAL, as the last checkpoint saw them.
    log: i64,
    /// Bytes of rows committed since the last request.
    pending: usize,
    /// Checkpoints asked for so far.
    requests: u64,
    /// Requests before the last checkpoint that ended began: `log` counts
    /// the frames they were about, not those of later ones.
    seen_through: u64,
}

impl State {
    /// Whether the actor must wait for the checkpoint before its next
    /// batch: the WAL is long, or `log` is too far behind to tell.
    fn must_wait(&self, restart_at: i64) -> bool {
        self.log >= restart_at || self.requests.saturating_sub(self.seen_through) > MAX_LAG
    }
}

struct Shared {
    state: Mutex<State>,
    ended: Condvar,
    /// A failure was logged as a warning: later ones are logged at debug.
    warned: AtomicBool,
    /// Counts a failure and, the first time, reports it to the writer.
    report: Report,
}

/// What a failed checkpoint does beside the log: `true` for the first one.
type Report = Box<dyn Fn(&DbError, bool) + Send + Sync>;

/// [`Report`] into the writer's counters and `recent_errors()`.
fn report_to(writer: Arc<WriterShared>, history: usize) -> Report {
    Box::new(move |e, first| {
        Counters::add(&writer.counters.checkpoint_failures, 1);
        if first {
            writer.remember(
                format!("a WAL checkpoint failed (nothing committed is lost): {e}"),
                history,
            );
        }
    })
}

impl Shared {
    /// Counts a failed checkpoint and reports it: the first one as a
    /// warning and in `recent_errors()`, later ones at debug.
    fn failed(&self, e: &DbError) {
        let first = !self.warned.swap(true, Ordering::Relaxed);
        if first {
            tracing::warn!(target: "trace_writer", error = %e,
                "a WAL checkpoint failed; the writer tries again before its next batch \
                 (nothing committed is lost; later failures are logged at debug)");
        } else {
            tracing::debug!(target: "trace_writer", error = %e, "a WAL checkpoint failed");
        }
        (self.report)(e, first);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The checkpoint thread and its second connection.
pub(crate) struct Checkpointer {
    /// [`RESTART_AT`], but in tests.
    restart_at: i64,
    /// [`CHECKPOINT_AFTER`], but in tests.
    checkpoint_after: usize,
    shared: Arc<Shared>,
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// For a file in WAL mode: opens the second connection, starts the
    /// thread and turns the actor's inline checkpoints off. `None` for any
    /// other database, or when any of that failed (then the actor's
    /// connection keeps checkpointing inline, as SQLite does by default).
    pub(crate) async fn for_file(
        opened: &Opened,
        storage: &StorageConfig,
        writer: &Arc<WriterShared>,
        history: usize,
    ) -> Option<Checkpointer> {
        let Ok(DbKind::File(path)) = storage.kind() else {
            return None;
        };
        if storage.journal_mode != JournalMode::Wal {
            return None;
        }
        let findings = writer.foreign.clone();
        let wal = match checkpoint::second_connection(opened, &path, findings).await {
            Ok(wal) => wal,
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no second connection for WAL checkpoints; the writer checkpoints inline");
                return None;
            }
        };
        let report = report_to(Arc::clone(writer), history);
        let checkpointer = Checkpointer::start(wal, RESTART_AT, CHECKPOINT_AFTER, report)?;
        match checkpoint::set_autocheckpoint(&opened.conn, 0).await {
            Ok(()) => Some(checkpointer),
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "cannot turn inline checkpoints off; the writer checkpoints inline");
                None
            }
        }
    }

    /// Starts the thread on `wal` (a second connection to the actor's
    /// file). `None` when no thread or runtime could be had: the actor's
    /// connection then keeps checkpointing inline.
    fn start(
        wal: WalConnection,
        restart_at: i64,
        checkpoint_after: usize,
        report: Report,
    ) -> Option<Checkpointer> {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no runtime for WAL checkpoints; the writer checkpoints inline");
                return None;
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            ended: Condvar::new(),
            warned: AtomicBool::new(false),
            report,
        });
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("trace-writer-wal".into())
            .spawn(move || {
                // Ends when the actor drops its sender; the connection
                // closes here, on this thread.
                for () in rx {
                    loop {
                        let through = for_thread.lock().requests;
                        let result = rt.block_on(checkpoint::passive(&wal.conn));
                        let mut state = for_thread.lock();
                        state.seen_through = through;
                        match result {
                            Ok(seen) if !seen.busy => state.log = seen.log,
                            // Another process's checkpoint runs: it copies.
                            Ok(_) => {}
                            Err(e) => {
                                // The actor copies the rest before its next
                                // batch.
                                state.log = state.log.max(restart_at);
                                for_thread.failed(&e);
                            }
                        }
                        if std::mem::take(&mut state.again) {
                            // Committed meanwhile: copy that too, so that
                            // `log` lags at most the batch being applied.
                            continue;
                        }
                        state.running = false;
                        drop(state);
                        for_thread.ended.notify_all();
                        break;
                    }
                }
                drop(wal);
            });
        match spawned {
            Ok(thread) => Some(Checkpointer {
                restart_at,
                checkpoint_after,
                shared,
                tx: Some(tx),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no thread for WAL checkpoints; the writer checkpoints inline");
                None
            }
        }
    }

    /// After a commit of `bytes` of rows: a checkpoint once
    /// [`CHECKPOINT_AFTER`] bytes were committed since the last request,
    /// unless one is in progress (then another after it).
    pub(crate) fn committed(&self, bytes: usize) {
        let Some(tx) = &self.tx else { return };
        let mut state = self.shared.lock();
        state.pending = state.pending.saturating_add(bytes);
        if state.pending < self.checkpoint_after {
            return;
        }
        state.pending = 0;
        state.requests += 1;
        if state.running {
            state.again = true;
            return;
        }
        state.running = true;
        if let Err(TrySendError::Full(()) | TrySendError::Disconnected(())) = tx.try_send(()) {
            state.running = false;
        }
    }

    /// Before a batch: once the WAL holds [`RESTART_AT`] frames, waits for
    /// the checkpoint in progress (up to [`WAIT_FOR_CHECKPOINT`]) and copies
    /// the rest on `conn`, the actor's connection, so that the batch's
    /// transaction starts the WAL over. Also waits when the checkpoints fell
    /// more than [`MAX_LAG`] requests behind.
    pub(crate) async fn before_batch(&self, conn: &Connection) {
        {
            let state = self.shared.lock();
            if !state.must_wait(self.restart_at) {
                return;
            }
            let (state, waited) = self
                .shared
                .ended
                .wait_timeout_while(state, WAIT_FOR_CHECKPOINT, |s| s.running)
                .unwrap_or_else(|p| p.into_inner());
            if waited.timed_out() && state.running {
                tracing::warn!(target: "trace_writer", waited = ?WAIT_FOR_CHECKPOINT,
                    "a WAL checkpoint is still running; the WAL grows until it ends");
                return;
            }
            if state.log < self.restart_at {
                // It was behind, and has caught up.
                return;
            }
        }
        let result = checkpoint::passive(conn).await;
        let mut state = self.shared.lock();
        match result {
            Ok(seen) if seen.complete() => state.log = 0,
            Ok(seen) if !seen.busy => {
                // Another connection (another process) reads an older
                // snapshot: the WAL cannot start over yet.
                state.log = seen.log;
            }
            // Another process's checkpoint runs; the next batch tries again.
            Ok(_) => {}
            Err(e) => self.shared.failed(&e),
        }
    }
}

impl Drop for Checkpointer {
    /// Lets a checkpoint in progress end and closes the second connection.
    /// A checkpoint copies at most `RESTART_AT` frames and a batch, so the
    /// wait is bounded.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, checkpoint};
    use crate::error::DbError;

    /// Frames of the WAL file: its size over the frame size (a 32-byte
    /// header, then 24 bytes and a page per frame).
    fn wal_frames(path: &std::path::Path, page: u64) -> u64 {
        let mut wal = path.as_os_str().to_os_string();
        wal.push("-wal");
        let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        len.saturating_sub(32) / (page + 24)
    }

    /// Batch after batch with no pause, as the actor commits them: the
    /// checkpoints run beside the batches, and the WAL starts over once it
    /// passes the restart point, so it never holds much more than that and
    /// a batch. Without the restart (PASSIVE checkpoints alone) it holds
    /// every batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_wal_starts_over_while_batches_keep_coming() {
        const RESTART: i64 = 300;
        const BATCHES: u64 = 60;
        const ROWS: u64 = 50;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let storage = StorageConfig::file(path.to_string_lossy().into_owned());
        let opened = db::open(&storage).await.expect("open");
        let wal = checkpoint::second_connection(&opened, &path, Arc::default())
            .await
            .expect("second connection");
        // A checkpoint asked for after every batch, as with large batches.
        let checkpointer =
            Checkpointer::start(wal, RESTART, 1, Box::new(|_, _| {})).expect("thread");
        checkpoint::set_autocheckpoint(&opened.conn, 0)
            .await
            .expect("pragma");
        let conn = &opened.conn;
        conn.execute("CREATE TABLE pad (x BLOB)", ())
            .await
            .expect("table");
        let mut largest = 0;
        for _ in 0..BATCHES {
            checkpointer.before_batch(conn).await;
            db::transaction(conn, async {
                for _ in 0..ROWS {
                    conn.execute("INSERT INTO pad VALUES (randomblob(3000))", ())
                        .await?;
                }
                Ok::<_, DbError>(())
            })
            .await
            .expect("batch");
            checkpointer.committed(ROWS as usize * 3000);
            largest = largest.max(wal_frames(&path, 4096));
        }
        drop(checkpointer);
        let mut rows = conn
            .query("SELECT count(*) FROM pad", ())
            .await
            .expect("count");
        let row = rows.next().await.expect("row").expect("a row");
        assert_eq!(row.get::<i64>(0).expect("count"), (BATCHES * ROWS) as i64);
        // A batch is about ROWS frames and a few of the table's pages. The
        // checkpoints' count of frames lags at most MAX_LAG batches and the
        // one being applied, and the restart comes with the batch after.
        let bound = RESTART as u64 + 4 * (ROWS + 10);
        assert!(
            largest <= bound,
            "the WAL reached {largest} frames (bound {bound})"
        );
        assert!(
            largest >= RESTART as u64 / 2,
            "the WAL never grew ({largest} frames): the test wrote too little"
        );
    }
}
