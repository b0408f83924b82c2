//! Applying one batch: one transaction through the transaction helper,
//! poison operations set aside, transient faults retried with backoff, and
//! past the close deadline the rest spilled.

use std::time::Instant;

use crate::db::exec::{segments, Segment};
use crate::db::{self, read, Op};
use crate::error::{ErrorClass, TracingError};
use crate::unwind::catch_unwind;
use crate::writer::actor::checkpoint::WAIT_FOR_CHECKPOINT;
use crate::writer::actor::items::{AttemptError, Item};
use crate::writer::actor::Actor;
use crate::writer::pipeline::Stage;
use crate::writer::stats::Counters;

impl Actor {
    /// Applies a batch in one transaction: poison operations are set aside
    /// and reported, transient faults are retried with backoff, and past the
    /// close deadline the remaining writes are spilled.
    ///
    /// On a remote server, `stage` is how far the batch got while it was
    /// queued (see [`Stage`]), and with `overlap` the next batches are
    /// collected, and queued in the pipeline, while the first try is in
    /// flight.
    ///
    /// It runs in a DEBUG span `batch` whose fields say the batch's size in
    /// operations and bytes, its attempts and its outcome (`committed`,
    /// `committed, some refused` or `spilled`), so the retry and spill events
    /// logged meanwhile carry them; no payload or token is recorded.
    ///
    /// Should the actor panic before the batch is committed or spilled (a
    /// bug), its writes, and those of the batches collected behind it, are
    /// held for the spill file before the panic goes on (see
    /// [`Actor::hold_on_panic`]).
    pub(super) async fn execute(&mut self, items: Vec<Item>, stage: Stage, overlap: bool) {
        use tracing::field::Empty;
        use tracing::Instrument;
        let span = tracing::debug_span!(target: "trace_writer", "batch",
            ops = Empty, bytes = Empty, attempts = Empty, outcome = Empty);
        let mut held = items;
        let run = self
            .execute_in(&mut held, stage, overlap, &span)
            .instrument(span.clone());
        if let Err(panic) = catch_unwind(run).await {
            self.hold_on_panic(held, true, panic);
        }
    }

    /// [`Actor::execute`]. `slot` holds the batch until it is committed,
    /// refused or spilled, and is empty after.
    async fn execute_in(
        &mut self,
        slot: &mut Vec<Item>,
        stage: Stage,
        overlap: bool,
        span: &tracing::Span,
    ) {
        let started = Instant::now();
        let mut attempts = 0u32;
        // Remotely the requests count themselves (see `Pipeline::send`).
        let local = self.pipeline.is_none();
        let mut stage = Some(stage);
        if local {
            self.shared.metrics.in_flight(1);
        }
        // Committed locally: the WAL grew.
        let mut checkpoint_due = false;
        let mut backoff = self.config.retry_initial;
        let mut multi = self.multi_row;
        let mut collect_next = overlap;
        // Once a batch was spilled, every later one is spilled too: none may
        // commit ahead of an earlier one that is waiting in the spill file.
        let mut spill_rest = self.spilling;
        let mut spill_cause = match &self.halt {
            Some(cause) => format!("queued after a fatal error: {cause}"),
            None => "queued behind a batch spilled at the close deadline".to_string(),
        };
        while !spill_rest {
            attempts += 1;
            let attempt = if !local {
                let overlap = std::mem::take(&mut collect_next);
                let stage = stage.take().unwrap_or(Stage::Collected);
                self.attempt_remote(slot, multi, stage, overlap).await
            } else {
                let conn = self.exec.conn.clone();
                if let Some(c) = &self.checkpointer {
                    let wait = self.shared.within_close_deadline(WAIT_FOR_CHECKPOINT);
                    c.before_batch(&conn, wait).await;
                }
                let result = db::transaction(&conn, self.apply_items(slot, multi)).await;
                checkpoint_due |= result.is_ok();
                result
            };
            match attempt {
                Ok(()) => break,
                Err(AttemptError::Restart) => {}
                Err(AttemptError::MultiRowFailed) => multi = false,
                Err(AttemptError::Transient(e)) => {
                    Counters::add(&self.shared.counters.retries, 1);
                    (self.shared.metrics)
                        .publish(&self.shared.counters.snapshot(), &mut self.published);
                    if self.shared.past_close_deadline() {
                        tracing::error!(target: "trace_writer", error = %e,
                            "close deadline passed while retrying; spilling the batch");
                        spill_cause = format!("close deadline passed while retrying: {e}");
                        spill_rest = true;
                        self.spilling = true;
                        break;
                    }
                    let cause = e.to_string();
                    if self.note(&format!("retrying: {cause}")) {
                        tracing::warn!(target: "trace_writer", error = %cause, ?backoff,
                            "transient fault; retrying the batch (the same cause is not \
                             logged again until the next flush)");
                        self.remember(format!("retrying batches after a transient fault: {cause}"));
                    } else {
                        tracing::debug!(target: "trace_writer", error = %cause, ?backoff,
                            "transient fault; retrying the batch");
                    }
                    self.reconnect_if_remote().await;
                    self.answer_step_loads_outside_tx(slot).await;
                    self.serve_control(false).await;
                    self.shared.sleep_until_close_deadline(backoff);
                    backoff = backoff.saturating_mul(2).min(self.config.retry_max);
                }
                Err(AttemptError::Fatal(e)) => {
                    // Nothing accepted is dropped: the batch is kept, in
                    // order, and so is everything after it.
                    self.halt(&e);
                    spill_cause = format!("fatal error: {e}");
                    spill_rest = true;
                    break;
                }
            }
        }
        // Committed, or spilled below: nothing to hold should the actor
        // panic from here on.
        let mut items = std::mem::take(slot);
        // Set aside as committed: found stored after a lost reply.
        let mut committed = 0;
        if let Some(p) = self.pipeline.as_mut() {
            // The lost reply these flags are about was this batch's.
            p.unanswered = false;
            p.lost_reply = false;
            committed = std::mem::take(&mut p.found_stored);
            // Encoded (or sent) in advance but spilled: a request in flight
            // is cut short, and if the server applied it all the same, a
            // replay counts its rows as duplicates.
            if let Some(stage) = stage.take() {
                p.discard(stage);
            }
        }
        // Reads not answered yet (the batch never got to them) learn why.
        let unanswered = || self.halt_error().unwrap_or(TracingError::WriterClosed);
        let (mut ops, mut bytes, mut refused) = (0usize, 0usize, 0usize);
        let mut to_spill = Vec::new();
        if spill_rest {
            let mut rest = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Item::Write {
                        op,
                        bytes: b,
                        failed: false,
                    } => {
                        ops += 1;
                        bytes += b;
                        to_spill.push(op);
                    }
                    other => rest.push(other),
                }
            }
            items = rest;
        }
        for item in &mut items {
            match item {
                Item::Write {
                    bytes: b, failed, ..
                } => {
                    ops += 1;
                    bytes += *b;
                    if *failed {
                        refused += 1;
                    } else {
                        committed += 1;
                    }
                }
                Item::LoadSteps { reply, .. } => {
                    if let Some(r) = reply.take() {
                        let _ = r.send(Err(unanswered()));
                    }
                }
                Item::GetSession { reply, .. } => {
                    if let Some(r) = reply.take() {
                        let _ = r.send(Err(unanswered()));
                    }
                }
            }
        }
        if let (true, Some(c)) = (checkpoint_due, &self.checkpointer) {
            c.committed(bytes);
        }
        if !to_spill.is_empty() {
            self.spill(to_spill, &spill_cause);
        }
        self.keep_refused();
        let c = &self.shared.counters;
        Counters::add(&c.committed, committed);
        if committed > 0 {
            c.record_batch(committed, started.elapsed().as_nanos() as u64);
        }
        c.queued_bytes
            .fetch_sub(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        c.done
            .fetch_add(ops as u64, std::sync::atomic::Ordering::Release);
        // The batch's memory goes off this thread, and its queue space comes
        // back once that memory is free: the permits bound the memory the
        // writer holds, batch included.
        self.reclaim.free(items, ops, bytes);
        self.foreign.scan_if_due();
        self.publish_batch(ops, bytes, started.elapsed(), local);
        let outcome = if spill_rest {
            "spilled"
        } else if refused > 0 {
            "committed, some refused"
        } else {
            "committed"
        };
        span.record("ops", ops);
        span.record("bytes", bytes);
        span.record("attempts", attempts);
        span.record("outcome", outcome);
        tracing::debug!(target: "trace_writer", elapsed = ?started.elapsed(), "batch done");
    }

    /// Publishes a finished batch and the counters to the metrics.
    fn publish_batch(&mut self, ops: usize, bytes: usize, took: std::time::Duration, local: bool) {
        let m = &self.shared.metrics;
        if local {
            m.in_flight(0);
        }
        m.batch(ops, bytes, took);
        m.publish(&self.shared.counters.snapshot(), &mut self.published);
    }

    /// Answers the reads of a committed batch.
    pub(super) async fn answer_reads(&mut self, items: &mut [Item]) {
        for item in items.iter_mut() {
            self.answer_read(item).await;
        }
    }

    /// Answers a read of the batch, if it was not answered yet (a write is
    /// left alone).
    async fn answer_read(&self, item: &mut Item) {
        match item {
            Item::LoadSteps { session_id, reply } => {
                if let Some(r) = reply.take() {
                    let steps = read::load_steps(&self.exec.conn, session_id).await;
                    let _ = r.send(steps.map_err(Into::into));
                }
            }
            Item::GetSession { session_id, reply } => {
                if let Some(r) = reply.take() {
                    let _ = r.send(read::get_session(&self.exec.conn, session_id).await);
                }
            }
            Item::Write { .. } => {}
        }
    }

    /// The body of a batch's transaction: every write, and the reads queued
    /// between them, in FIFO order.
    async fn apply_items(&mut self, items: &mut [Item], multi: bool) -> Result<(), AttemptError> {
        // Runs of inserts: they commute (ids are assigned), so each table's
        // rows go in as few statements as possible.
        let runs = |k: usize| match &items[k] {
            Item::Write {
                op: Op::Insert { table, .. },
                failed: false,
                ..
            } if multi => Some(*table),
            _ => None,
        };
        for segment in segments(items.len(), 1, runs) {
            if segment.start() % 64 == 63 {
                // A producer may wait on a step load: answer it now rather
                // than after the batch (leases wait: they need their own
                // transaction).
                self.serve_control(false).await;
            }
            let i = match segment {
                Segment::One(i) => i,
                Segment::Run(tables) => {
                    for (table, rows) in tables {
                        let rows: Vec<&Vec<libsql::Value>> = rows
                            .iter()
                            .filter_map(|&k| match &items[k] {
                                Item::Write {
                                    op: Op::Insert { values, .. },
                                    ..
                                } => Some(values),
                                _ => None,
                            })
                            .collect();
                        if let Err(e) = self.exec.insert_multi(table, &rows).await {
                            return Err(if e.is_transient() {
                                AttemptError::Transient(e)
                            } else {
                                AttemptError::MultiRowFailed
                            });
                        }
                    }
                    continue;
                }
            };
            match &mut items[i] {
                Item::Write { op, failed, .. } => {
                    if !*failed {
                        if let Err(e) = self.exec.apply(op).await {
                            match e.class {
                                ErrorClass::Transient => return Err(AttemptError::Transient(e)),
                                ErrorClass::Fatal => return Err(AttemptError::Fatal(e)),
                                ErrorClass::Operation => {}
                            }
                            // This operation's fault: set it aside, keep the rest.
                            *failed = true;
                            let op = op.clone();
                            self.record_failure(op, &e);
                            if !self.exec.in_transaction() {
                                // SQLite rolled the transaction back itself.
                                return Err(AttemptError::Restart);
                            }
                        }
                    }
                }
                read => self.answer_read(read).await,
            }
        }
        Ok(())
    }

    /// While the batch cannot start (another connection holds the lock),
    /// answers step loads from committed rows plus the steps queued ahead of
    /// them in this batch: every earlier batch is already committed, so that
    /// is exactly what the load would see. A new session then costs its
    /// producer no wait on the lock; its rows simply queue.
    async fn answer_step_loads_outside_tx(&mut self, items: &mut [Item]) {
        if self.exec.in_transaction() {
            return;
        }
        for k in 0..items.len() {
            let (before, rest) = items.split_at_mut(k);
            let Item::LoadSteps { session_id, reply } = &mut rest[0] else {
                continue;
            };
            if reply.is_none() {
                continue;
            }
            // A read may fail too (a rollback journal's exclusive lock):
            // then the load waits for the batch like everything else.
            let Ok(mut steps) = read::load_steps(&self.exec.conn, session_id).await else {
                continue;
            };
            for item in before.iter() {
                if let Item::Write {
                    op, failed: false, ..
                } = item
                {
                    if let Some((id, sid, step)) = op.timestep_key() {
                        if sid == session_id && !steps.iter().any(|(s, _)| s == step) {
                            steps.push((step.to_string(), id));
                        }
                    }
                }
            }
            if let Some(r) = reply.take() {
                let _ = r.send(Ok(steps));
            }
        }
    }

    pub(super) async fn reconnect_if_remote(&mut self) {
        if !self.exec.is_remote() {
            return;
        }
        let Some(opened) = &self.opened else { return };
        match opened.db.connect() {
            Ok(conn) => self.exec.replace_connection(conn),
            Err(e) => tracing::warn!(target: "trace_writer", error = %e, "reconnect failed"),
        }
    }
}
