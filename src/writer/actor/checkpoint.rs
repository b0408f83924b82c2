//! WAL checkpoints beside the actor, on a thread of their own.
//!
//! Inline, SQLite copies the WAL back into the database file in the
//! connection that commits, and syncs it, once the WAL passes
//! `wal_autocheckpoint` pages: the actor waited for the copy and the disk.
//! With thousands of rollouts at once that was a large share of the actor's
//! time (docs/scale.md). Here the actor's connection never checkpoints;
//! once [`CHECKPOINT_AFTER`] bytes of rows or [`CHECKPOINT_EVERY`] commits
//! came since the last one, a commit wakes `trace-writer-wal`, which runs a
//! PASSIVE checkpoint on a second connection while the actor applies the
//! next batch.
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
//! Should the thread end early (a panic), the actor checkpoints inline
//! from then on, before the batch after each request: the WAL stays
//! bounded either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use libsql::Connection;

use crate::db::checkpoint::{self, WalConnection};
use crate::db::foreign::ForeignWatch;
use crate::db::Opened;
use crate::error::{DbError, ErrorClass};
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
pub(crate) const WAIT_FOR_CHECKPOINT: Duration = Duration::from_secs(30);

/// Checkpoints asked for that one may fall behind before the actor waits
/// for it: so `log` is never older than this many requests (and the batch
/// being applied).
const MAX_LAG: u64 = 2;

/// Bytes of rows committed between two checkpoints: each syncs the file,
/// so a trickle of small batches does not sync once per commit. A batch of
/// thousands of rollouts is larger, and asks for one every time.
pub(crate) const CHECKPOINT_AFTER: usize = 8 << 20;

/// Commits between two checkpoints, however small: each commit appends a
/// few pages to the WAL (a page per table and index it touched), so a
/// trickle of one-row batches reaches about as many frames as SQLite's own
/// `wal_autocheckpoint` (1,000) before the next checkpoint.
pub(crate) const CHECKPOINT_EVERY: u32 = 64;

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
    /// Commits since the last request.
    commits: u32,
    /// The thread has ended (it panicked, or the writer is closing): the
    /// actor checkpoints inline.
    dead: bool,
    /// Checkpoints asked for so far.
    requests: u64,
    /// Requests before the last checkpoint that ended began: `log` counts
    /// the frames they were about, not those of later ones.
    seen_through: u64,
}

impl State {
    /// Whether the actor must wait for the checkpoint before its next
    /// batch: the WAL is long, or `log` is too far behind to tell.
    /// Once the thread is gone, every request is the actor's to run.
    fn must_wait(&self, restart_at: i64) -> bool {
        let lag = if self.dead { 0 } else { MAX_LAG };
        self.log >= restart_at || self.requests.saturating_sub(self.seen_through) > lag
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

/// When checkpoints are asked for, and when the actor copies the rest.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// [`RESTART_AT`], but in tests.
    restart_at: i64,
    /// [`CHECKPOINT_AFTER`], but in tests.
    checkpoint_after: usize,
    /// [`CHECKPOINT_EVERY`], but in tests.
    checkpoint_every: u32,
}

/// The checkpoint thread and its second connection.
pub(crate) struct Checkpointer {
    limits: Limits,
    shared: Arc<Shared>,
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Marks the thread's end, however it ends: a panic included, so that the
/// actor neither waits for a checkpoint that never ends nor counts on one.
struct Ended(Arc<Shared>);

impl Drop for Ended {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        let early = !state.dead && std::thread::panicking();
        state.dead = true;
        state.running = false;
        drop(state);
        self.0.ended.notify_all();
        if early {
            self.0.failed(&DbError::new(
                ErrorClass::Fatal,
                "the WAL checkpoint thread panicked; the writer checkpoints inline from now on",
            ));
        }
    }
}

impl Checkpointer {
    /// For a file in WAL mode: opens the second connection, starts the
    /// thread and turns the actor's inline checkpoints off. `None` for any
    /// other database, or when any of that failed (then the actor's
    /// connection keeps checkpointing inline, as SQLite does by default).
    ///
    /// Also returns the second connection's claim on its file handles: keep
    /// it until the actor's connection is closed too. SQLite keeps the
    /// handles of a closed connection open while another connection of the
    /// process holds a lock on the file, and an unclaimed handle would be
    /// reported as a second SQLite library's.
    pub(crate) async fn for_file(
        opened: &Opened,
        storage: &StorageConfig,
        writer: &Arc<WriterShared>,
        history: usize,
    ) -> Option<(Checkpointer, ForeignWatch)> {
        let Ok(DbKind::File(path)) = storage.kind() else {
            return None;
        };
        if storage.journal_mode != JournalMode::Wal {
            return None;
        }
        let findings = writer.foreign.clone();
        let wal = match checkpoint::second_connection(opened, storage, &path, findings).await {
            Ok(wal) => wal,
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "no second connection for WAL checkpoints; the writer checkpoints inline");
                return None;
            }
        };
        let report = report_to(Arc::clone(writer), history);
        let WalConnection { conn, watch } = wal;
        let limits = Limits {
            restart_at: RESTART_AT,
            checkpoint_after: CHECKPOINT_AFTER,
            checkpoint_every: CHECKPOINT_EVERY,
        };
        let checkpointer = Checkpointer::start(conn, limits, report)?;
        match checkpoint::set_autocheckpoint(&opened.conn, 0).await {
            Ok(()) => Some((checkpointer, watch)),
            Err(e) => {
                tracing::debug!(target: "trace_writer", error = %e,
                    "cannot turn inline checkpoints off; the writer checkpoints inline");
                None
            }
        }
    }

    /// Starts the thread on `conn` (a second connection to the actor's
    /// file). `None` when no thread or runtime could be had: the actor's
    /// connection then keeps checkpointing inline.
    fn start(conn: Connection, limits: Limits, report: Report) -> Option<Checkpointer> {
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
        let ended = Ended(shared.clone());
        let spawned = std::thread::Builder::new()
            .name("trace-writer-wal".into())
            .spawn(move || {
                // Ends when the actor drops its sender; the connection
                // closes here, on this thread, before `ended` says so.
                let ended = ended;
                for () in rx {
                    checkpoint_while_asked(&ended.0, &rt, &conn, limits.restart_at);
                }
                drop(conn);
                drop(ended);
            });
        match spawned {
            Ok(thread) => Some(Checkpointer {
                limits,
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
    /// [`CHECKPOINT_AFTER`] bytes or [`CHECKPOINT_EVERY`] commits came since
    /// the last request, unless one is in progress (then another after it).
    pub(crate) fn committed(&self, bytes: usize) {
        let Some(tx) = &self.tx else { return };
        let mut state = self.shared.lock();
        state.pending = state.pending.saturating_add(bytes);
        state.commits = state.commits.saturating_add(1);
        if state.pending < self.limits.checkpoint_after
            && state.commits < self.limits.checkpoint_every
        {
            return;
        }
        state.pending = 0;
        state.commits = 0;
        state.requests += 1;
        if state.dead {
            // The actor runs it, before the next batch.
            return;
        }
        if state.running {
            state.again = true;
            return;
        }
        state.running = true;
        match tx.try_send(()) {
            Ok(()) => {}
            // The thread holds a request it has not begun: it runs.
            Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {
                state.running = false;
                state.dead = true;
            }
        }
    }

    /// Before a batch: once the WAL holds [`RESTART_AT`] frames, waits for
    /// the checkpoint in progress (for up to `wait`: [`WAIT_FOR_CHECKPOINT`],
    /// or less once the writer's close deadline runs) and
    /// copies the rest on `conn`, the actor's connection, so that the
    /// batch's transaction starts the WAL over. Also waits when the
    /// checkpoints fell more than [`MAX_LAG`] requests behind, and runs
    /// every request itself once the thread is gone.
    pub(crate) async fn before_batch(&self, conn: &Connection, wait: Duration) {
        let through = {
            let state = self.shared.lock();
            if !state.must_wait(self.limits.restart_at) {
                return;
            }
            let (state, waited) = self
                .shared
                .ended
                .wait_timeout_while(state, wait, |s| s.running)
                .unwrap_or_else(|p| p.into_inner());
            if waited.timed_out() && state.running {
                tracing::warn!(target: "trace_writer", ?wait,
                    "a WAL checkpoint is still running; the WAL grows until it ends");
                return;
            }
            if !state.dead && state.log < self.limits.restart_at {
                // It was behind, and has caught up.
                return;
            }
            state.requests
        };
        let result = checkpoint::passive(conn).await;
        let mut state = self.shared.lock();
        // On the actor's own connection, between its transactions: it saw
        // every commit.
        state.seen_through = state.seen_through.max(through);
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

    /// Ends the thread: lets a checkpoint in progress end, for up to `wait`
    /// ([`WAIT_FOR_CHECKPOINT`], or less once the writer's close deadline
    /// runs), and closes the second connection. Past that the thread is
    /// left to end by itself.
    pub(crate) fn finish(mut self, wait: Duration) {
        self.tx = None;
        let state = self.shared.lock();
        let (state, waited) = self
            .shared
            .ended
            .wait_timeout_while(state, wait, |s| !s.dead)
            .unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() && !state.dead {
            tracing::warn!(target: "trace_writer", ?wait,
                "a WAL checkpoint was still running at close; it ends by itself \
                 (nothing committed depends on it)");
            // Dropping the handle detaches the thread.
            self.thread = None;
        }
    }
}

/// The thread's work for one request: a PASSIVE checkpoint, again while
/// commits came during the last one.
fn checkpoint_while_asked(
    shared: &Shared,
    rt: &tokio::runtime::Runtime,
    conn: &Connection,
    restart_at: i64,
) {
    loop {
        let through = shared.lock().requests;
        let result = rt.block_on(checkpoint::passive(conn));
        let mut state = shared.lock();
        state.seen_through = state.seen_through.max(through);
        match result {
            Ok(seen) if !seen.busy => state.log = seen.log,
            // Another process's checkpoint runs: it copies.
            Ok(_) => {}
            Err(e) => {
                // The actor copies the rest before its next batch.
                state.log = state.log.max(restart_at);
                shared.failed(&e);
            }
        }
        if std::mem::take(&mut state.again) {
            // Committed meanwhile: copy that too, so that `log` lags at
            // most the batch being applied.
            continue;
        }
        state.running = false;
        drop(state);
        shared.ended.notify_all();
        return;
    }
}

impl Drop for Checkpointer {
    /// Lets a checkpoint in progress end and closes the second connection
    /// (when [`Checkpointer::finish`] did not). A checkpoint copies at most
    /// `RESTART_AT` frames and a batch, so the wait is bounded.
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
    /// header, then 24 bytes and a page per frame). The file keeps its
    /// largest size when the WAL starts over, so this is its peak.
    fn wal_frames(path: &std::path::Path, page: u64) -> u64 {
        let mut wal = path.as_os_str().to_os_string();
        wal.push("-wal");
        let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        len.saturating_sub(32) / (page + 24)
    }

    /// A file database, the actor's connection to it with inline
    /// checkpoints off, and a checkpointer with `limits` beside it.
    /// Fields drop in order: the checkpointer's connection, the actor's,
    /// then the folder.
    struct Setup {
        checkpointer: Checkpointer,
        opened: db::Opened,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    async fn setup(limits: Limits) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let storage = StorageConfig::file(path.to_string_lossy().into_owned());
        let opened = db::open(&storage).await.expect("open");
        let wal = checkpoint::second_connection(&opened, &storage, &path, Arc::default())
            .await
            .expect("second connection");
        let checkpointer =
            Checkpointer::start(wal.conn, limits, Box::new(|_, _| {})).expect("thread");
        checkpoint::set_autocheckpoint(&opened.conn, 0)
            .await
            .expect("pragma");
        opened
            .conn
            .execute("CREATE TABLE pad (x BLOB)", ())
            .await
            .expect("table");
        Setup {
            checkpointer,
            opened,
            path,
            _dir: dir,
        }
    }

    impl Setup {
        /// Commits `batches` batches of `rows` rows of 3,000 bytes, as the
        /// actor does, with no pause; returns the WAL's peak in frames.
        async fn batches(&self, batches: u64, rows: u64) -> u64 {
            let conn = &self.opened.conn;
            let mut largest = 0;
            for _ in 0..batches {
                self.checkpointer
                    .before_batch(conn, WAIT_FOR_CHECKPOINT)
                    .await;
                db::transaction(conn, async {
                    for _ in 0..rows {
                        conn.execute("INSERT INTO pad VALUES (randomblob(3000))", ())
                            .await?;
                    }
                    Ok::<_, DbError>(())
                })
                .await
                .expect("batch");
                self.checkpointer.committed(rows as usize * 3000);
                largest = largest.max(wal_frames(&self.path, 4096));
            }
            largest
        }

        async fn rows(&self) -> i64 {
            let mut rows = (self.opened.conn)
                .query("SELECT count(*) FROM pad", ())
                .await
                .expect("count");
            let row = rows.next().await.expect("row").expect("a row");
            row.get::<i64>(0).expect("count")
        }
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
        // A checkpoint asked for after every batch, as with large batches.
        let t = setup(Limits {
            restart_at: RESTART,
            checkpoint_after: 1,
            checkpoint_every: u32::MAX,
        })
        .await;
        let largest = t.batches(BATCHES, ROWS).await;
        assert_eq!(t.rows().await, (BATCHES * ROWS) as i64);
        // A batch is about ROWS frames and a few of the table's pages. The
        // checkpoints' count of frames lags at most MAX_LAG batches and the
        // one being applied, and the restart comes with the batch after.
        let bound = RESTART as u64 + 4 * (ROWS + 10);
        assert!(
            largest <= bound,
            "the WAL reached {largest} frames (bound {bound})"
        );
        assert!(
            largest >= RESTART as u64 / 4,
            "the WAL never grew ({largest} frames): the test wrote too little"
        );
    }

    /// One-row commits, far too small to reach the bytes that ask for a
    /// checkpoint: the count of commits asks instead, so the checkpoints
    /// learn how long the WAL is and it starts over past the restart point.
    /// When only bytes count, no checkpoint runs and it holds every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_trickle_of_small_commits_is_checkpointed_too() {
        const RESTART: i64 = 100;
        const EVERY: u32 = 8;
        const COMMITS: u64 = 400;
        let peak = |every| async move {
            let t = setup(Limits {
                restart_at: RESTART,
                checkpoint_after: usize::MAX,
                checkpoint_every: every,
            })
            .await;
            let largest = t.batches(COMMITS, 1).await;
            assert_eq!(t.rows().await, COMMITS as i64);
            largest
        };
        let by_count = peak(EVERY).await;
        let by_bytes_only = peak(u32::MAX).await;
        // Every commit appends at least its row's page.
        assert!(
            by_bytes_only >= COMMITS,
            "without checkpoints the WAL held {by_bytes_only} frames, \
             fewer than the {COMMITS} commits"
        );
        // A one-row commit is a few frames; the count lags at most MAX_LAG
        // requests and the one being applied.
        let bound = RESTART as u64 + (MAX_LAG + 2) * u64::from(EVERY) * 4;
        assert!(
            by_count <= bound,
            "checkpoints every {EVERY} commits left a WAL of {by_count} frames \
             (bound {bound}; {by_bytes_only} with none)"
        );
    }

    /// The thread is gone (as after a panic): the actor runs each request
    /// itself, before the batch after it, and the WAL stays as bounded as
    /// with the thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn without_the_thread_the_actor_checkpoints_inline() {
        const RESTART: i64 = 300;
        const BATCHES: u64 = 60;
        const ROWS: u64 = 50;
        let mut t = setup(Limits {
            restart_at: RESTART,
            checkpoint_after: 1,
            checkpoint_every: u32::MAX,
        })
        .await;
        // A sender whose receiver is gone: the thread's channel closes, so
        // it ends, and every later request finds it gone.
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(rx);
        drop(t.checkpointer.tx.replace(tx));
        if let Some(thread) = t.checkpointer.thread.take() {
            thread.join().expect("the thread ended");
        }
        assert!(t.checkpointer.shared.lock().dead);
        let largest = t.batches(BATCHES, ROWS).await;
        assert_eq!(t.rows().await, (BATCHES * ROWS) as i64);
        // Each batch is checkpointed, and the WAL starts over, before the
        // next: it holds about one batch, far from the 3,000 frames of all.
        let bound = 2 * (ROWS + 10);
        assert!(
            largest <= bound,
            "the WAL reached {largest} frames (bound {bound})"
        );
    }
}
