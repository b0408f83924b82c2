//! The actor: the one thread that owns the connection.
//!
//! It takes whatever is queued (up to a batch's bounds), applies it in one
//! explicit transaction, commits, and answers whoever waits. Producers did
//! all serialization; the actor only binds values.
//!
//! This file holds the loop: collecting a batch, what each message that
//! ends one does, and stopping. Beside it:
//!
//! - `items.rs`: what a batch is made of, and why a try did not commit;
//! - `batch.rs`: one batch's work, its retries and its spill;
//! - `remote.rs`: a batch on a remote server, driving
//!   [`Pipeline`](crate::writer::pipeline::Pipeline);
//! - `control.rs`: id leases and step loads, which do not wait their turn;
//! - `failures.rs`: refused operations, the spill file, the halt;
//! - `reclaim.rs`: freeing finished batches on a thread of their own;
//! - `checkpoint.rs`: WAL checkpoints on a thread of their own;
//! - `shared.rs`: the state shared with the handles;
//! - `thread.rs`: the actor's thread and its runtime.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

mod batch;
mod checkpoint;
mod control;
mod failures;
pub(crate) mod items;
mod reclaim;
mod remote;
mod shared;
mod thread;

use checkpoint::{Checkpointer, WAIT_FOR_CHECKPOINT};
pub(crate) use items::Item;
use items::{BatchBound, Gathering, Terminator};
use reclaim::Reclaim;
use shared::DeathGuard;
pub(crate) use shared::{CloseDeadline, Shared};
pub(crate) use thread::{spawn, StartReply};

use crate::db::foreign::ForeignWatch;
use crate::db::{self, read, Executor, Op, Opened, Table};
use crate::error::TracingError;
use crate::storage::StorageConfig;
use crate::unwind::{catch_unwind, Panic};
use crate::writer::config::WriterConfig;
use crate::writer::lock;
use crate::writer::metrics::Published;
use crate::writer::pipeline::{Pipeline, QueuedBatch};
pub(crate) use crate::writer::protocol::{Control, Msg};
use crate::writer::protocol::{LeaseRequest, Reply, Steps};
use crate::writer::spill::{self, KeptPaths};
use crate::writer::stats::Counters;
use crate::writer::wait::deadline;

/// The longest a flush waits for the batches before it to be freed (see
/// [`Reclaim::settle`]): freeing one takes milliseconds.
const SETTLE: Duration = Duration::from_secs(5);

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
    /// WAL checkpoints on a thread of their own (a file in WAL mode).
    /// Before `opened`: its connection closes first.
    checkpointer: Option<Checkpointer>,
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
    /// Fault injection: panic when next encoding a batch behind another.
    #[cfg(feature = "fault-injection")]
    crash_when_encoding_behind: bool,
    /// The fatal error that halted the writer (see `TracingError::Halted`).
    halt: Option<String>,
    /// Causes already logged and kept for `recent_errors()` since the last
    /// flush: each distinct cause is named once, not once per operation or
    /// per batch.
    noted: HashSet<String>,
    /// What the last publish of the metrics saw.
    published: Published,
    state: RunState,
    /// Frees finished batches off this thread.
    reclaim: Reclaim,

    /// The watch for a second SQLite library. Last: it is dropped after the
    /// connections, so their handles stay claimed while open (it holds the
    /// checkpoint connection's claims too).
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
        let mut foreign = std::mem::replace(&mut opened.watch, ForeignWatch::none(Arc::default()));
        let exec = Executor::new(opened.conn.clone(), opened.remote)
            .with_pipeline(opened.pipeline.clone());
        let multi_row = config.multi_row_inserts.unwrap_or(opened.remote);
        let kept = spill::default_paths(&config, &storage);
        let reclaim = Reclaim::start(shared.clone());
        let checkpointer =
            match Checkpointer::for_file(&opened, &storage, &shared, config.error_history).await {
                Some((c, watch)) => {
                    // SQLite may keep the checkpoint connection's handles
                    // open until the actor's connection closes too.
                    foreign.absorb(watch);
                    Some(c)
                }
                None => None,
            };
        let actor = Actor {
            rx,
            control_rx,
            deferred_leases: Vec::new(),
            pending_loads: Vec::new(),
            pipeline: exec.pipeline_client().map(Pipeline::new),
            in_batch: false,
            shared,
            config,
            checkpointer,
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
            #[cfg(feature = "fault-injection")]
            crash_when_encoding_behind: false,
            halt: None,
            noted: HashSet::new(),
            foreign,
            published: Published::default(),
            state: RunState::Running,
            reclaim,
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
            rx: self.rx.clone(),
            spill: self.kept.spill.beside(),
        };
        // A panic in the loop (a bug) has the queue taken and filed under
        // the step rows the executor learnt before the thread ends.
        let close_reply = match catch_unwind(self.run_loop()).await {
            Ok(reply) => reply,
            Err(panic) => self.hold_on_panic(Vec::new(), false, panic),
        };
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

    /// Serves the queue and the control channel until closed or until every
    /// handle is gone. Returns the reply of a `Close`.
    async fn run_loop(&mut self) -> Option<Reply<()>> {
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
        close_reply
    }

    /// Collects a batch starting with `first`, applies it, and returns the
    /// message that ended it early, if any. Leases asked for meanwhile are
    /// carried by a batch's request on a remote server; any left (there was
    /// nothing to send, or the batch failed) are served alone here, so no
    /// producer waits for ids past the batches.
    ///
    /// On a remote server the next batch is collected, encoded and sent
    /// behind the one in flight, and so on while the queue keeps them
    /// coming, up to a message that needs a commit first.
    async fn batch(&mut self, first: Msg) -> Option<Terminator> {
        self.in_batch = true;
        let mut g = Gathering::default();
        let terminator = match catch_unwind(self.collect(first, &mut g)).await {
            Ok(t) => t,
            Err(panic) => self.hold_on_panic(std::mem::take(&mut g.items), false, panic),
        };
        let mut next = Some(QueuedBatch::collected(g.items, terminator));
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

    /// Takes what is queued into `g`, up to the batch bounds, stopping after
    /// a message that needs a commit first (returned). When the queue runs
    /// dry it waits up to `linger` for more, unless a read is waiting.
    async fn collect(&mut self, first: Msg, g: &mut Gathering) -> Option<Terminator> {
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
                        match self.linger(linger_end, g.room(&self.config)).await {
                            Some(m) => m,
                            None => break,
                        }
                    }
                },
            };
            match g.take(msg, &self.config) {
                BatchBound::Open => {}
                BatchBound::Full => break,
                BatchBound::EndsWith(t) => return Some(t),
            }
        }
        None
    }

    /// Keeps the writes the actor holds for the [`DeathGuard`], then lets
    /// the panic go on: `items` (a batch, or what was being collected) and,
    /// with `queued`, the batches collected behind it, ahead of any held
    /// already (collected later, by a call the panic passed through first),
    /// then what is still queued. Each is filed under the step rows the
    /// executor learnt, as [`Actor::spill`] files them. The batch's refused
    /// writes go to the dead-letter file as usual.
    fn hold_on_panic(&mut self, items: Vec<Item>, queued: bool, panic: Panic) -> ! {
        let mut writes: Vec<Op> = Vec::new();
        let mut take = |items: Vec<Item>| {
            // A refused write is counted and kept in `self.refused` already.
            writes.extend(items.into_iter().filter_map(|item| match item {
                Item::Write {
                    op, failed: false, ..
                } => Some(op),
                _ => None,
            }))
        };
        take(items);
        if queued {
            if let Some(p) = self.pipeline.as_mut() {
                for batch in p.queued.drain(..) {
                    take(batch.items);
                }
            }
        }
        // Nothing is queued once the gate is closed, so the queue taken here
        // is all of it (a call the panic passed through first took it
        // already), and every write is filed under the learnt step rows.
        self.shared.close_gate();
        let mut from_queue: Vec<Op> = shared::queued_writes(&self.rx).collect();
        for op in writes.iter_mut().chain(from_queue.iter_mut()) {
            self.exec.remap_op(op);
        }
        let mut held = lock(&self.shared.held);
        held.from_queue += from_queue.len();
        writes.append(&mut held.ops);
        writes.append(&mut from_queue);
        held.ops = writes;
        drop(held);
        self.keep_refused();
        std::panic::resume_unwind(panic)
    }

    /// Waits for the next message until `end` (forever for `None`), serving
    /// id leases and step loads meanwhile, so that lingering never holds up
    /// a producer that waits for ids or a new session's steps. `None` when
    /// the time is up or every handle is gone.
    async fn linger(&mut self, end: Option<Instant>, room: usize) -> Option<Msg> {
        // Writes queued meanwhile do not wake the actor: nobody waits on the
        // queue, so a producer's send makes no system call, and the batch
        // takes them all at the deadline. `Control::Wake` ends the wait at
        // once: a message that waits for an answer sends it, so does the
        // write that fills the batch (`Shared::full_at`), and so does a
        // producer that must wait for queue space (`Shared::space_wanted`).
        let full_at = (self.shared.counters.enqueued)
            .load(Ordering::Acquire)
            .saturating_add(room as u64);
        self.shared.full_at.store(full_at, Ordering::Release);
        let msg = self.wait_for_wake(end).await;
        self.shared.full_at.store(u64::MAX, Ordering::Release);
        msg
    }

    /// Whether a producer waits for queue space: then the batch must go.
    fn space_wanted(&self) -> bool {
        self.shared.space_wanted.swap(false, Ordering::AcqRel)
    }

    /// [`Actor::linger`]'s wait, on the control channel until `end`
    /// (forever for `None`).
    async fn wait_for_wake(&mut self, end: Option<Instant>) -> Option<Msg> {
        loop {
            if self.space_wanted() {
                return None;
            }
            match self.rx.try_recv() {
                Ok(m) => return Some(m),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let left = end.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|d| d.is_zero()) {
                return None;
            }
            // A day stands in for "no deadline": the loop just waits again.
            let wait = left.unwrap_or(Duration::from_secs(86_400));
            crossbeam_channel::select! {
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
                // The queue space of every batch before it is back when the
                // flush returns: a producer that filled the queue may send
                // again at once.
                let limit = self.shared.within_close_deadline(SETTLE);
                if !self.reclaim.settle(limit) {
                    tracing::debug!(target: "trace_writer", ?limit,
                        "a finished batch was still being freed when the flush returned");
                }
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
        if let Some(c) = self.checkpointer.take() {
            c.finish(self.shared.within_close_deadline(WAIT_FOR_CHECKPOINT));
        }
        let result = self.take_failures();
        if let Err(e) = &result {
            tracing::error!(target: "trace_writer", error = %e, "writer closed with errors");
        }
        (self.shared.metrics).publish(&self.shared.counters.snapshot(), &mut self.published);
        (reply, result)
    }
}
