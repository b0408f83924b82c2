//! The actor: the one thread that owns the connection.
//!
//! (Over 600 lines: the loop is kept with its message types, so that the
//! protocol, what each message does and in which order, reads in one file.
//! One batch's work is in `batch.rs`, the state shared with the handles in
//! `shared.rs`.)
//!
//! It takes whatever is queued (up to a batch's bounds), applies it in one
//! explicit transaction, commits, and answers whoever waits. Producers did
//! all serialization; the actor only binds values.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use tokio::sync::oneshot;

mod batch;
pub(crate) mod items;
mod remote;
mod shared;

pub(crate) use items::Item;
use items::{BatchBound, Gathering, Terminator};
pub(crate) use shared::{CloseDeadline, Shared};

use crate::db::foreign::ForeignWatch;
use crate::db::{self, read, Executor, Op, Opened, Table};
use crate::error::{DbError, TracingError};
use crate::storage::{DbKind, StorageConfig};
use crate::writer::config::WriterConfig;
use crate::writer::lock;
use crate::writer::metrics::Published;
use crate::writer::pipeline::{Pipeline, QueuedBatch};
pub(crate) use crate::writer::protocol::{Control, Msg};
use crate::writer::protocol::{LeaseRequest, Reply, Steps};
use crate::writer::spill::{self, KeptPaths};
use crate::writer::stats::Counters;
use crate::writer::wait::deadline;

/// Marks the writer dead if the actor thread unwinds or returns early, so
/// that no producer is left waiting.
struct DeathGuard {
    shared: Arc<Shared>,
    clean: bool,
}

impl Drop for DeathGuard {
    fn drop(&mut self) {
        if !self.clean {
            let cause = if std::thread::panicking() {
                "the writer's actor thread panicked".to_string()
            } else {
                "the writer's actor thread stopped".to_string()
            };
            tracing::error!(target: "trace_writer", "{cause}");
            lock(&self.shared.dead).get_or_insert(cause);
        }
        // Wake every producer that waits for space or ids: they fail with
        // `WriterClosed` instead of hanging.
        self.shared.ops_sem.close();
        self.shared.bytes_sem.close();
        self.shared.ids.shut_down(TracingError::WriterClosed);
    }
}

/// The loop's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    /// Serving producers.
    Running,
    /// `close()` was received or every handle dropped: drain and stop.
    Stopping,
}

pub(crate) struct Actor {
    rx: Receiver<Msg>,
    control_rx: Receiver<Control>,
    /// Leases taken off the channel while the database was locked.
    deferred_leases: Vec<LeaseRequest>,
    /// On a remote server: the batches on their way there, and the leases
    /// their requests carry (see [`Pipeline`]).
    pipeline: Option<Pipeline>,
    /// A batch is being collected or applied.
    in_batch: bool,
    /// Step loads taken off the control channel, answered together.
    pending_loads: Vec<(String, Reply<Steps>)>,
    shared: Arc<Shared>,
    config: WriterConfig,
    opened: Option<Opened>,
    exec: Executor,
    multi_row: bool,
    failed_since_flush: u64,
    first_failure: Option<String>,
    /// The spill and dead-letter files.
    kept: KeptPaths,
    /// Refused operations of the current batch, with their causes, written
    /// to the dead-letter file once the batch is done (one sync per batch).
    refused: Vec<(Op, String)>,
    /// The dead-letter file could not be written: why (reported by flush).
    dead_letter_error: Option<String>,
    spilled: usize,
    /// A batch was spilled: every later one goes to the spill file too.
    spilling: bool,
    /// The fatal error that halted the writer (see `TracingError::Halted`).
    halt: Option<String>,
    /// Causes already logged and kept for `recent_errors()` since the last
    /// flush: each distinct cause is named once, not once per operation or
    /// per batch.
    noted: HashSet<String>,
    /// What the last publish of the metrics saw.
    published: Published,
    state: RunState,
    /// The watch for a second SQLite library. Last: it is dropped after the
    /// connection, so the connection's handles stay claimed while open.
    foreign: ForeignWatch,
}

impl Actor {
    /// Opens the database, migrates it and leases the first id blocks.
    pub(crate) async fn start(
        rx: Receiver<Msg>,
        control_rx: Receiver<Control>,
        shared: Arc<Shared>,
        config: WriterConfig,
        storage: StorageConfig,
    ) -> Result<Actor, TracingError> {
        let mut opened = db::open_watched(&storage, shared.foreign.clone()).await?;
        let foreign = std::mem::replace(&mut opened.watch, ForeignWatch::none(Arc::default()));
        let exec = Executor::new(opened.conn.clone(), opened.remote)
            .with_pipeline(opened.pipeline.clone());
        let multi_row = config.multi_row_inserts.unwrap_or(opened.remote);
        let kept = spill::default_paths(&config, &storage);
        let actor = Actor {
            rx,
            control_rx,
            deferred_leases: Vec::new(),
            pending_loads: Vec::new(),
            pipeline: exec.pipeline_client().map(Pipeline::new),
            in_batch: false,
            shared,
            config,
            opened: Some(opened),
            exec,
            multi_row,
            failed_since_flush: 0,
            first_failure: None,
            kept,
            refused: Vec::new(),
            dead_letter_error: None,
            spilled: 0,
            spilling: false,
            halt: None,
            noted: HashSet::new(),
            foreign,
            published: Published::default(),
            state: RunState::Running,
        };
        // Every table's first block in one transaction: one request on a
        // remote server.
        let sizes: Vec<(Table, i64)> = Table::WITH_IDS
            .iter()
            .map(|&t| (t, actor.shared.ids.block_size(t)))
            .collect();
        let blocks = actor.exec.lease_blocks(&sizes).await?;
        for ((table, _), ids) in sizes.into_iter().zip(blocks) {
            Counters::add(&actor.shared.counters.id_leases, 1);
            actor.shared.ids.grant(table, ids);
        }
        Ok(actor)
    }

    /// The loop. Returns when closed or when every handle is gone.
    pub(crate) async fn run(mut self) {
        let mut guard = DeathGuard {
            shared: self.shared.clone(),
            clean: false,
        };
        let mut close_reply = None;
        while self.state == RunState::Running {
            self.serve_control(true).await;
            let first = crossbeam_channel::select! {
                recv(self.rx) -> msg => msg.ok(),
                recv(self.control_rx) -> c => {
                    if let Ok(c) = c {
                        self.control(c, true).await;
                    }
                    self.serve_control(true).await;
                    continue;
                }
            };
            let Some(first) = first else {
                // Every handle is gone and the queue is empty.
                self.state = RunState::Stopping;
                break;
            };
            let terminator = self.batch(first).await;
            if let Some(t) = terminator {
                if let Some(reply) = self.finish(t).await {
                    close_reply = Some(reply);
                    self.state = RunState::Stopping;
                }
            }
        }
        let (reply, result) = self.stop(close_reply).await;
        // Closing the connection: the statements, the connection and the
        // database all go with `self`, before `close()` hears back.
        drop(self);
        guard.clean = true;
        drop(guard);
        if let Some(r) = reply {
            let _ = r.send(result);
        }
    }

    /// Collects a batch starting with `first`, applies it, and returns the
    /// message that ended it early, if any. Leases asked for meanwhile ride
    /// in a batch's request on a remote server; any left (there was nothing
    /// to send, or the batch failed) are served alone here, so no producer
    /// waits for ids past the batches.
    ///
    /// On a remote server the next batch is collected, encoded and sent
    /// behind the one in flight, and so on while the queue keeps them
    /// coming, up to a message that needs a commit first.
    async fn batch(&mut self, first: Msg) -> Option<Terminator> {
        self.in_batch = true;
        let (items, terminator) = self.collect(first).await;
        let mut next = Some(QueuedBatch::collected(items, terminator));
        // Nothing is collected past a message that needs a commit first, so
        // a batch that ends with one is the last in the queue.
        let mut terminator = None;
        while let Some(batch) = next.take() {
            terminator = batch.terminator;
            if batch.items.is_empty() {
                // Nothing to send: leases that were to be carried by it are
                // served alone below.
                if let Some(p) = self.pipeline.as_mut() {
                    p.discard(batch.stage);
                }
            } else {
                let overlap = terminator.is_none() && self.pipeline.is_some();
                self.execute(batch.items, batch.stage, overlap).await;
            }
            next = self.pipeline.as_mut().and_then(|p| p.queued.pop_front());
        }
        self.in_batch = false;
        let leases = self.pipeline.as_mut().map(Pipeline::take_leases);
        for req in leases.unwrap_or_default() {
            self.lease(req).await;
        }
        terminator
    }

    /// Serves what waits on the control channel. With `leases` false (the
    /// database is locked), leases are kept for later and only step loads,
    /// which only read, are answered.
    async fn serve_control(&mut self, leases: bool) {
        if leases {
            for req in std::mem::take(&mut self.deferred_leases) {
                self.lease(req).await;
            }
        }
        while let Ok(c) = self.control_rx.try_recv() {
            self.control(c, leases).await;
        }
        self.answer_step_loads().await;
    }

    /// Answers every step load waiting, with one query for all of them (one
    /// round trip on a remote server, however many sessions start at once).
    async fn answer_step_loads(&mut self) {
        if self.pending_loads.is_empty() {
            return;
        }
        let loads = std::mem::take(&mut self.pending_loads);
        let ids: Vec<&str> = loads.iter().map(|(s, _)| s.as_str()).collect();
        // Nothing of these sessions is queued or in the open batch (see
        // `SessionCache`), so even inside a batch's transaction this reads
        // exactly their committed steps.
        match self.exec.load_steps_many(&ids).await {
            Ok(mut found) => {
                for (session_id, reply) in loads {
                    let steps = found.remove(&session_id).unwrap_or_default();
                    let _ = reply.send(Ok(steps));
                }
            }
            Err(e) => {
                let e: TracingError = e.into();
                for (_, reply) in loads {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    async fn control(&mut self, c: Control, leases: bool) {
        match c {
            Control::Lease(req) => match self.pipeline.as_mut() {
                // Carried by the next request rather than sent alone.
                Some(p) if self.in_batch => p.carry(req),
                _ if leases => self.lease(req).await,
                _ => self.deferred_leases.push(req),
            },
            #[cfg(feature = "fault-injection")]
            Control::Crash => panic!("fault injection: the actor was told to crash"),
            // Answered together by `answer_step_loads`.
            Control::LoadSteps { session_id, reply } => {
                self.pending_loads.push((session_id, reply))
            }
        }
    }

    async fn lease(&mut self, req: LeaseRequest) {
        let mut backoff = self.config.retry_initial;
        loop {
            let leased = self.exec.lease_blocks(&[(req.table, req.size)]).await;
            match leased.map(|mut blocks| blocks.pop()) {
                Ok(Some(ids)) => {
                    Counters::add(&self.shared.counters.id_leases, 1);
                    self.shared.ids.grant(req.table, ids);
                    return;
                }
                Err(e) if e.is_transient() && !self.shared.past_close_deadline() => {
                    tracing::warn!(target: "trace_writer", error = %e, "id lease failed; retrying");
                    self.remember(format!(
                        "retrying an id lease for {}: {e}",
                        req.table.name()
                    ));
                    Counters::add(&self.shared.counters.retries, 1);
                    self.reconnect_if_remote().await;
                    self.shared.sleep_until_close_deadline(backoff);
                    backoff = backoff.saturating_mul(2).min(self.config.retry_max);
                }
                Ok(None) => {
                    let e = DbError::new(crate::error::ErrorClass::Fatal, crate::error::BUG);
                    self.shared.ids.lease_failed(req.table, e.into());
                    return;
                }
                Err(e) => {
                    tracing::error!(target: "trace_writer", error = %e, "id lease failed");
                    self.shared.ids.lease_failed(req.table, e.into());
                    return;
                }
            }
        }
    }

    /// Takes what is queued, up to the batch bounds, stopping after a
    /// message that needs a commit first. When the queue runs dry it waits up
    /// to `linger` for more, unless a read is waiting.
    async fn collect(&mut self, first: Msg) -> (Vec<Item>, Option<Terminator>) {
        let mut g = Gathering::default();
        let linger_end = deadline(self.config.linger);
        let mut next = Some(first);
        loop {
            if g.items.len() % 256 == 255 {
                // Producers may be waiting for ids: lease before the batch
                // grows further, not after it commits.
                self.serve_control(true).await;
            }
            let msg = match next.take() {
                Some(m) => m,
                None => match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        if g.has_read || self.config.linger.is_zero() {
                            break;
                        }
                        self.serve_control(true).await;
                        match self.linger(linger_end).await {
                            Some(m) => m,
                            None => break,
                        }
                    }
                },
            };
            match g.take(msg, &self.config) {
                BatchBound::Open => {}
                BatchBound::Full => break,
                BatchBound::EndsWith(t) => return (g.items, Some(t)),
            }
        }
        (g.items, None)
    }

    /// An operation the database refused: counted, its cause logged and
    /// kept once, and the operation itself kept for the dead-letter file.
    fn record_failure(&mut self, op: Op, err: &dyn std::fmt::Display) {
        let cause = err.to_string();
        let text = format!("{} for session `{}`: {cause}", op.kind(), op.session_id());
        if self.note(&cause) {
            tracing::error!(target: "trace_writer", session = op.session_id(), kind = op.kind(),
                error = %cause, dead_letter = %self.kept.dead_letter.path().display(),
                "write refused; the operation is kept in the dead-letter file \
                 (later refusals with the same cause are not logged again until the next flush)");
            self.remember(text.clone());
        }
        Counters::add(&self.shared.counters.failed, 1);
        if op.timestep_key().is_some() {
            // The step's row was never written: the handles must stop
            // handing out its id (see `Shared::failed_steps`).
            lock(&self.shared.failed_steps).push(op.session_id().to_string());
        }
        self.failed_since_flush += 1;
        self.first_failure.get_or_insert(text);
        self.refused.push((op, cause));
    }

    /// Writes the refused operations of the batch to the dead-letter file.
    fn keep_refused(&mut self) {
        if self.refused.is_empty() {
            return;
        }
        let mut refused = std::mem::take(&mut self.refused);
        // Written as they would have been committed (see `spill`).
        for (op, _) in &mut refused {
            self.exec.remap_op(op);
        }
        let lines = refused.iter().map(|(op, cause)| (op, cause.as_str()));
        match self.kept.dead_letter.append(lines) {
            Ok(()) => Counters::add(&self.shared.counters.dead_letters, refused.len() as u64),
            Err(e) => {
                let why = format!(
                    "could not write {} refused operation(s) to the dead-letter file {}: {e}",
                    refused.len(),
                    self.kept.dead_letter.path().display()
                );
                tracing::error!(target: "trace_writer", error = %why, "refused operations lost");
                self.remember(why.clone());
                self.dead_letter_error.get_or_insert(why);
            }
        }
    }

    /// `true` the first time `cause` is seen since the last flush.
    fn note(&mut self, cause: &str) -> bool {
        if self.noted.contains(cause) {
            return false;
        }
        if self.noted.len() >= NOTED_CAUSES {
            self.noted.clear();
        }
        self.noted.insert(cause.to_string());
        true
    }

    /// Keeps an error where `recent_errors()` can read it.
    fn remember(&self, text: String) {
        let mut recent = lock(&self.shared.recent_errors);
        if recent.len() >= self.config.error_history.max(1) {
            recent.pop_front();
        }
        recent.push_back(text);
    }

    /// What a flush answers: `Halted` or `Spilled` while writes are being
    /// spilled (nothing queued before the flush committed), else
    /// `WriteFailed` if the database refused operations since the last
    /// flush, naming the dead-letter file that keeps them.
    fn take_failures(&mut self) -> Result<(), TracingError> {
        self.keep_refused();
        self.noted.clear();
        if let Some(e) = self.spilled_error() {
            return Err(e);
        }
        let failed = std::mem::take(&mut self.failed_since_flush);
        let kept = match self.dead_letter_error.take() {
            Some(why) => format!("; {why}"),
            None => format!(
                "; the refused operation(s) are kept in {} for replay once the cause is fixed",
                self.kept.dead_letter.path().display()
            ),
        };
        match self.first_failure.take() {
            Some(first) if failed > 0 => Err(TracingError::WriteFailed {
                failed,
                first_cause: first + &kept,
            }),
            _ => Ok(()),
        }
    }

    /// `Halted` or `Spilled` if writes are being spilled.
    fn spilled_error(&self) -> Option<TracingError> {
        if let Some(cause) = &self.halt {
            return Some(TracingError::Halted {
                cause: cause.clone(),
                path: self.kept.spill.path().to_path_buf(),
                spilled: self.spilled,
            });
        }
        (self.spilling || self.spilled > 0).then(|| TracingError::Spilled {
            path: self.kept.spill.path().to_path_buf(),
            count: self.spilled,
        })
    }

    /// A batch met an error no retry can fix: from now on every write is
    /// spilled, in order, and write calls fail fast with the cause.
    fn halt(&mut self, err: &DbError) {
        self.spilling = true;
        if self.halt.is_some() {
            return;
        }
        let cause = err.to_string();
        tracing::error!(target: "trace_writer", error = %cause,
            spill = %self.kept.spill.path().display(),
            "fatal database error: the writer halts; this batch and every write queued after \
             it are spilled, and later write calls fail with this cause until the writer is \
             closed. Fix the cause, then replay the spill file");
        self.remember(format!(
            "fatal error, the writer halted (writes go to {}): {cause}",
            self.kept.spill.path().display()
        ));
        *lock(&self.shared.halt) = Some((cause.clone(), self.kept.spill.path().to_path_buf()));
        self.halt = Some(cause);
    }

    /// Waits for the next message until `end` (forever for `None`), serving
    /// id leases and step loads meanwhile, so that lingering never holds up
    /// a producer that waits for ids or a new session's steps. `None` when
    /// the time is up or every handle is gone.
    async fn linger(&mut self, end: Option<Instant>) -> Option<Msg> {
        loop {
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|d| d.is_zero()) {
                return None;
            }
            // A day stands in for "no deadline": the loop just waits again.
            let wait = left.unwrap_or(Duration::from_secs(86_400));
            crossbeam_channel::select! {
                recv(self.rx) -> m => return m.ok(),
                recv(self.control_rx) -> c => {
                    if let Ok(c) = c {
                        self.control(c, true).await;
                    }
                    self.serve_control(true).await;
                    if self.pipeline.as_ref().is_some_and(Pipeline::has_leases) {
                        // A producer waits for ids carried by this batch:
                        // send it now.
                        return None;
                    }
                }
                default(wait) => {}
            }
        }
    }

    /// Handles a message that needed everything before it committed.
    /// Returns the reply of a `Close`.
    async fn finish(&mut self, t: Terminator) -> Option<Reply<()>> {
        // Writes queued before a query or a delete are in the spill file, not
        // in the database: running it now would see, or undo, the wrong rows.
        let spilled = || {
            TracingError::InvalidState(
                "the writer spilled the writes queued before this call at its close \
                 deadline; it was not run"
                    .into(),
            )
        };
        let spilled = || self.halt_error().unwrap_or_else(spilled);
        match t {
            Terminator::Query { reply, .. } if self.spilling => {
                let _ = reply.send(Err(spilled()));
            }
            Terminator::Delete { reply, .. } if self.spilling => {
                let _ = reply.send(Err(spilled()));
            }
            Terminator::Flush(reply) => {
                let _ = reply.send(self.take_failures());
            }
            Terminator::Query { sql, params, reply } => {
                let result = read::run_query(&self.exec.conn, &sql, &params)
                    .await
                    .map_err(Into::into);
                if self.exec.in_transaction() {
                    // User SQL must not leave our connection inside its
                    // transaction: the next batch begins its own.
                    db::tx::rollback(&self.exec.conn).await;
                    let _ = reply.send(Err(TracingError::InvalidInput(
                        "the query left a transaction open; it was rolled back".into(),
                    )));
                } else {
                    let _ = reply.send(result);
                }
            }
            Terminator::Delete { session_id, reply } => {
                let deleted = self.exec.delete_session(&session_id).await;
                let _ = reply.send(deleted.map_err(Into::into));
            }
            Terminator::Close(reply) => return Some(reply),
        }
        None
    }

    /// Drains what is left (nothing can be sent after `close()` closed the
    /// gate), commits it, closes the connection and answers `close()`.
    async fn stop(
        &mut self,
        reply: Option<Reply<()>>,
    ) -> (Option<Reply<()>>, Result<(), TracingError>) {
        loop {
            let first = match self.rx.try_recv() {
                Ok(m) => m,
                Err(_) => break,
            };
            let terminator = self.batch(first).await;
            match terminator {
                Some(Terminator::Close(r)) => {
                    let _ = r.send(Ok(()));
                }
                Some(t) => {
                    self.finish(t).await;
                }
                None => {}
            }
        }
        self.serve_control(true).await;
        let result = self.take_failures();
        if let Err(e) = &result {
            tracing::error!(target: "trace_writer", error = %e, "writer closed with errors");
        }
        (self.shared.metrics).publish(&self.shared.counters.snapshot(), &mut self.published);
        (reply, result)
    }

    /// `Halted` if a fatal error halted the writer.
    fn halt_error(&self) -> Option<TracingError> {
        self.halt.as_ref().and_then(|_| self.spilled_error())
    }

    /// Keeps operations that could not be committed in the spill file. If
    /// even that fails, they go to the dead-letter file with both causes.
    fn spill(&mut self, mut ops: Vec<Op>, cause: &str) {
        // Written as they would have been committed: under the real rows of
        // steps created elsewhere, which a replay could not know.
        for op in &mut ops {
            self.exec.remap_op(op);
        }
        let n = ops.len();
        match self.kept.spill.append(ops.iter().map(|op| (op, cause))) {
            Ok(()) => {
                self.spilled += n;
                Counters::add(&self.shared.counters.spilled, n as u64);
                let path = self.kept.spill.path().display().to_string();
                if self.note(&format!("spilled: {cause}")) {
                    tracing::error!(target: "trace_writer", count = n, path = %path, cause,
                        "operations spilled (later batches spilled for the same cause are \
                         logged at debug level)");
                } else {
                    tracing::debug!(target: "trace_writer", count = n, path = %path, "operations spilled");
                }
            }
            Err(e) => {
                let err = format!(
                    "could not spill to {} ({e}) after: {cause}",
                    self.kept.spill.path().display()
                );
                for op in ops {
                    self.record_failure(op, &err);
                }
                self.keep_refused();
            }
        }
    }
}

/// At most this many distinct causes are remembered between flushes (see
/// `Actor::noted`); past it the set starts afresh.
const NOTED_CAUSES: usize = 256;

/// Answered once the database is open and the first id blocks are leased.
pub(crate) type StartReply = oneshot::Receiver<Result<(), TracingError>>;

/// Spawns the actor on its own named thread and waits until the database is
/// open, so a bad path or URL fails here and a handle never points at a dead
/// actor.
pub(crate) fn spawn(
    rx: Receiver<Msg>,
    control_rx: Receiver<Control>,
    shared: Arc<Shared>,
    config: WriterConfig,
    storage: StorageConfig,
) -> Result<(std::thread::JoinHandle<()>, StartReply), TracingError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let remote = matches!(storage.kind(), Ok(DbKind::Remote(_)));
    let handle = std::thread::Builder::new()
        .name("trace-writer".into())
        .spawn(move || {
            // The actor's own runtime: libsql's API is async (remote
            // connections need a reactor), but this thread blocks freely. On
            // a remote server one worker drives the requests in flight while
            // the actor collects the next batch (see `remote.rs`).
            let rt = if remote {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("trace-writer-io")
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(TracingError::Internal(format!(
                        "cannot build the actor's runtime: {e}"
                    ))));
                    return;
                }
            };
            rt.block_on(async move {
                match Actor::start(rx, control_rx, shared, config, storage).await {
                    Ok(actor) => {
                        let _ = ready_tx.send(Ok(()));
                        actor.run().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| TracingError::Internal(format!("cannot spawn the writer thread: {e}")))?;
    Ok((handle, ready_rx))
}
