//! A batch on a remote server, as the actor drives it: one request, and
//! while it is in flight the next batches are collected from the queue and
//! handed to the [`Pipeline`] to encode and send behind it.
//!
//! The request runs on a task of the actor's runtime, which a worker thread
//! drives (see `spawn`), so the actor thread is free meanwhile: it takes the
//! queued messages that make the next batch, serves step loads, keeps lease
//! requests for the next request to carry, and encodes that batch.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use crate::db::exec::RemoteBatch;
use crate::db::{Op, Table};
use crate::error::{DbError, ErrorClass, BUG};
use crate::unwind::catch_unwind;
use crate::writer::actor::items::{AttemptError, BatchBound, Gathering, Item, Terminator};
use crate::writer::actor::Actor;
use crate::writer::pipeline::{
    ops_of, past_deadline, reply_lost, unfailed_writes, Answer, EncodedBatch, InFlight, Pipeline,
    QueuedBatch, Stage, CLOSE_CHECK, MAX_AHEAD,
};
use crate::writer::protocol::Msg;
use crate::writer::stats::Counters;

/// What ended a wait while a request is in flight.
enum WaitEnded {
    /// A message for the next batch.
    Message(Msg),
    /// The reply to the request.
    Reply(Answer),
    /// A control message was served, the queue is gone, or the wait timed
    /// out.
    Other,
    /// No message came within the wait asked for: the queue is dry.
    Idle,
}

/// The pipeline of an actor on a remote server; `None` on a local one.
fn pipeline(p: &mut Option<Pipeline>) -> Result<&mut Pipeline, AttemptError> {
    p.as_mut().ok_or_else(|| {
        AttemptError::Fatal(DbError::new(
            ErrorClass::Fatal,
            "no remote pipeline on a local database",
        ))
    })
}

impl Actor {
    /// One try at a batch on a remote server: one request, one transaction.
    /// `stage` is how far the batch got while it was queued: encoded in
    /// advance (used if it is still right), or even sent behind the batch
    /// before. With `overlap`, the batches that follow are collected while
    /// the request is in flight and queued in the pipeline, sent behind it
    /// where they can be (see [`Actor::send_ahead`]). Reads queued in the
    /// batch are answered once it committed.
    pub(super) async fn attempt_remote(
        &mut self,
        items: &mut [Item],
        multi: bool,
        stage: Stage,
        overlap: bool,
    ) -> Result<(), AttemptError> {
        let mut current = match stage {
            sent @ (Stage::Sent(..) | Stage::Answered(..)) => sent,
            other => match self.send(items, multi, other.into_encoded()).await? {
                Some(sent) => sent,
                None => {
                    self.answer_reads(items).await;
                    return Ok(());
                }
            },
        };
        if overlap {
            self.send_ahead(items, &mut current).await;
        }
        let shared = self.shared.clone();
        let p = pipeline(&mut self.pipeline)?;
        let (batch, answer) = p.wait_reply(current, &shared);
        let Some(EncodedBatch {
            tx,
            writes,
            mut leases,
            ..
        }) = batch
        else {
            return Err(AttemptError::Fatal(DbError::new(ErrorClass::Fatal, BUG)));
        };
        let outcome = answer.and_then(|r| self.exec.finish_remote(tx, r));
        if !matches!(outcome, Ok(RemoteBatch::Committed(_))) {
            // Its leases are carried by the next try, or served alone after
            // the batch; so are those of the next batch, if it was only
            // encoded, rather than wait out this one's retries.
            let p = pipeline(&mut self.pipeline)?;
            p.give_back(std::mem::take(&mut leases));
            if let Some(n) = p.queued.back_mut().filter(|n| !n.stage.is_sent()) {
                let stage = std::mem::replace(&mut n.stage, Stage::Collected);
                p.discard(stage);
            }
        }
        match outcome {
            Ok(RemoteBatch::Committed(blocks)) => {
                for (req, ids) in leases.into_iter().zip(blocks) {
                    Counters::add(&self.shared.counters.id_leases, 1);
                    self.shared.ids.grant(req.table, ids);
                }
                self.answer_reads(items).await;
                Ok(())
            }
            Ok(RemoteBatch::MultiRowFailed(e)) if e.is_transient() => {
                Err(AttemptError::Transient(e))
            }
            Ok(RemoteBatch::MultiRowFailed(_)) => Err(AttemptError::MultiRowFailed),
            Ok(RemoteBatch::RanFirst) => {
                tracing::debug!(target: "trace_writer",
                    "a batch sent behind another ran before it committed; sending it again");
                Err(AttemptError::Restart)
            }
            Ok(RemoteBatch::Failed(failed)) => {
                let lost_reply = self.pipeline.as_ref().is_some_and(|p| p.lost_reply);
                if lost_reply && failed.iter().any(|(_, e)| e.class == ErrorClass::Operation) {
                    // A reply of this batch was lost and the probe found
                    // nothing, yet the resend is refused: the first request
                    // may have committed after the probe (a slow server
                    // still ran it). Rows stored under our ids are ours:
                    // they count as committed, and the rest is sent again.
                    if self.set_aside_stored(items, &writes).await? > 0 {
                        return Err(AttemptError::Restart);
                    }
                }
                for (j, e) in failed {
                    match e.class {
                        ErrorClass::Transient => return Err(AttemptError::Transient(e)),
                        ErrorClass::Fatal => return Err(AttemptError::Fatal(e)),
                        ErrorClass::Operation => {}
                    }
                    if let Some(Item::Write { op, failed, .. }) =
                        writes.get(j).and_then(|&k| items.get_mut(k))
                    {
                        *failed = true;
                        let op = op.clone();
                        self.record_failure(op, &e);
                    }
                }
                // The server rolled back: send the rest again.
                Err(AttemptError::Restart)
            }
            Err(e) if e.is_transient() => {
                // No answer: the server may have committed before the reply
                // was lost. The next try checks first.
                let p = pipeline(&mut self.pipeline)?;
                p.unanswered = true;
                p.lost_reply = true;
                Err(AttemptError::Transient(e))
            }
            Err(e) => Err(AttemptError::Fatal(e)),
        }
    }

    /// Sends the batch: `ready` if it is still right, else encoded anew.
    /// After a lost reply, checks first whether the server applied it. `None`
    /// when there is nothing to send (or it was applied).
    async fn send(
        &mut self,
        items: &[Item],
        multi: bool,
        mut ready: Option<EncodedBatch>,
    ) -> Result<Option<Stage>, AttemptError> {
        let writes = unfailed_writes(items);
        if pipeline(&mut self.pipeline)?.unanswered {
            // The reply to the last try was lost: if the server committed
            // it, sending it again would duplicate nothing (ids are fixed)
            // but fail on every row. Leases it carried are taken again (the
            // lost blocks are only a gap).
            if let Some(r) = ready.take() {
                pipeline(&mut self.pipeline)?.discard(Stage::Encoded(r));
            }
            let ops = ops_of(items, &writes);
            if self.batch_was_applied(&ops).await? {
                return Ok(None);
            }
        }
        let p = pipeline(&mut self.pipeline)?;
        let ready = match ready {
            // One encoded behind the batch before is encoded again: that
            // batch's outcome is known now, and its marker may be gone.
            Some(r) if r.writes == writes && p.still_right(&self.exec, &r, multi, false) => r,
            stale => {
                if let Some(r) = stale {
                    p.discard(Stage::Encoded(r));
                }
                match p.encode(&mut self.exec, items, writes, multi) {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(AttemptError::Fatal(e)),
                }
            }
        };
        let flight = p.send(&ready, &self.shared);
        Ok(Some(Stage::Sent(ready, flight)))
    }

    /// While `current` (the request of `items`) is in flight: first sends
    /// the queued batch next behind it, if it was not sent yet (it was
    /// collected while the batch before this one was in flight, and encoded
    /// then if it could be); then collects the batches that follow and
    /// sends each behind the last one in flight, up to [`MAX_AHEAD`] of
    /// them, as long as that one has a marker row and nothing queued waits
    /// for a commit first. One more is collected and encoded, to be sent at
    /// the next batch's turn, as soon as this reply has been handled. A
    /// batch that cannot be sent is only encoded, or, if the reply is in,
    /// left as it is; it ends the queue.
    async fn send_ahead(&mut self, items: &[Item], current: &mut Stage) {
        self.send_queued_front(items, current);
        loop {
            let Some(p) = self.pipeline.as_ref() else {
                return;
            };
            let room = p.queued.len() <= MAX_AHEAD
                && p.queued
                    .back()
                    .is_none_or(|b| b.stage.is_sent() && b.terminator.is_none());
            if !room {
                return;
            }
            // A batch that would be sent at once stops growing when the
            // queue runs dry; one that must wait for a slot, or for the
            // reply of a batch it cannot be sent behind (no marker row),
            // grows meanwhile, and step loads are served meanwhile.
            let early = p.queued.len() < MAX_AHEAD
                && !self.spilling
                && current.encoded().is_some_and(|b| b.marker.is_some());
            let mut g = Gathering::default();
            let collect = self.collect_during(current, &mut g, early);
            let terminator = match catch_unwind(collect).await {
                Ok(t) => t,
                Err(panic) => self.hold_on_panic(std::mem::take(&mut g.items), false, panic),
            };
            let next_items = g.items;
            if next_items.is_empty() && terminator.is_none() {
                return;
            }
            let Some(p) = self.pipeline.as_ref() else {
                return;
            };
            let before = p.queued.len();
            let send = before < MAX_AHEAD;
            let next = QueuedBatch::collected(next_items, terminator);
            self.ready_and_queue(next, false, |actor, next| {
                actor.get_ready(items, current, next, before, send)
            });
        }
    }

    /// Runs `ready` on `batch`, then queues it in the pipeline: at the
    /// front with `front`, else at the back. Queued even if `ready`
    /// panicked (a bug), so that the dying actor holds its writes with the
    /// pipeline's, in order (see [`Actor::hold_on_panic`]); the panic then
    /// goes on.
    fn ready_and_queue(
        &mut self,
        mut batch: QueuedBatch,
        front: bool,
        ready: impl FnOnce(&mut Self, &mut QueuedBatch),
    ) {
        let readied = std::panic::catch_unwind(AssertUnwindSafe(|| ready(self, &mut batch)));
        if let Some(p) = self.pipeline.as_mut() {
            if front {
                p.queued.push_front(batch);
            } else {
                p.queued.push_back(batch);
            }
        }
        if let Err(panic) = readied {
            std::panic::resume_unwind(panic);
        }
    }

    /// Sends the first queued batch, collected while the batch before
    /// `current` (of `items`) was in flight, behind `current`: as encoded
    /// if that is still right (it was encoded behind it, and nothing since
    /// changed where its records go or which leases are carried), else
    /// encoded again. Not if `current`'s reply is in: then it is sent in
    /// its turn, knowing how `current` ended.
    fn send_queued_front(&mut self, items: &[Item], current: &mut Stage) {
        if current.answered() {
            return;
        }
        let multi = self.multi_row;
        let Some(p) = self.pipeline.as_mut() else {
            return;
        };
        let Some(front) = p.queued.pop_front() else {
            return;
        };
        if front.stage.is_sent() || unfailed_writes(&front.items).is_empty() {
            p.queued.push_front(front);
            return;
        }
        self.ready_and_queue(front, true, |actor, front| {
            actor.send_behind_current(items, current, front, multi)
        });
    }

    /// [`Actor::send_queued_front`]'s work on `front`, taken off the queue.
    fn send_behind_current(
        &mut self,
        items: &[Item],
        current: &mut Stage,
        front: &mut QueuedBatch,
        multi: bool,
    ) {
        let Some(p) = self.pipeline.as_mut() else {
            return;
        };
        let current_ok = match front.stage.encoded() {
            Some(r) => p.still_right(&self.exec, r, multi, true),
            None => false,
        };
        if current_ok {
            if let Stage::Encoded(r) = std::mem::replace(&mut front.stage, Stage::Collected) {
                let flight = p.send(&r, &self.shared);
                front.stage = Stage::Sent(r, flight);
            }
        } else {
            let stale = std::mem::replace(&mut front.stage, Stage::Collected);
            p.discard(stale);
            // Nothing is queued before it: it goes behind `current`.
            self.get_ready(items, current, front, 0, true);
        }
    }

    /// Readies `next`, collected after `current` (of `items`) and the first
    /// `before` queued batches, while `current` is in flight: encoded behind
    /// the last of them if it can be and, with `send`, sent; encoded only if
    /// it cannot; left as it is if it would go right behind `current`,
    /// whose reply is in.
    fn get_ready(
        &mut self,
        items: &[Item],
        current: &mut Stage,
        next: &mut QueuedBatch,
        before: usize,
        send: bool,
    ) {
        // A batch of reads and leases only is left to its turn: its leases
        // are served alone if nothing else comes to carry them. One that
        // would go behind this batch, whose reply is in, is left to its turn
        // too (one behind a queued batch still in flight is not).
        if unfailed_writes(&next.items).is_empty()
            || (before == 0 && current.answered())
            || self.spilling
            || self.shared.past_close_deadline()
        {
            return;
        }
        #[cfg(feature = "fault-injection")]
        if std::mem::take(&mut self.crash_when_encoding_behind) {
            panic!("fault injection: the actor was told to crash while encoding a batch");
        }
        let (Some(p), Some(batch)) = (self.pipeline.as_mut(), current.encoded()) else {
            return;
        };
        let first = InFlight { items, batch };
        let multi = self.multi_row;
        let Some(r) = p.encode_after(&mut self.exec, first, before, &next.items, multi) else {
            return;
        };
        next.stage = if r.behind && send {
            let flight = p.send(&r, &self.shared);
            Stage::Sent(r, flight)
        } else {
            Stage::Encoded(r)
        };
    }

    /// After a lost reply: sets aside the writes of `writes` (indexes into
    /// `items`) whose rows are stored, as committed (counted in
    /// `found_stored`), and returns how many.
    async fn set_aside_stored(
        &mut self,
        items: &mut [Item],
        writes: &[usize],
    ) -> Result<usize, AttemptError> {
        let rows: Vec<(Table, i64)> = writes
            .iter()
            .filter_map(|&k| match items.get(k) {
                Some(Item::Write {
                    op: op @ Op::Insert { table, .. },
                    failed: false,
                    ..
                }) => op.id().map(|id| (*table, id)),
                _ => None,
            })
            .collect();
        let probe = self.exec.stored_rows(&rows);
        let stored = match self.shared.until_close_deadline() {
            Some(left) => tokio::time::timeout(left, probe)
                .await
                .map_err(|_| past_deadline())??,
            None => probe.await?,
        };
        let mut found = 0;
        for &k in writes {
            if let Some(Item::Write { op, failed, .. }) = items.get_mut(k) {
                let key = match &*op {
                    Op::Insert { table, .. } => op.id().map(|id| (*table, id)),
                    _ => None,
                };
                if !*failed && key.is_some_and(|key| stored.contains(&key)) {
                    *failed = true;
                    found += 1;
                }
            }
        }
        if found > 0 {
            if let Some(p) = self.pipeline.as_mut() {
                p.found_stored += found as u64;
            }
            let text = format!(
                "a batch whose reply was lost was committed after the check: {found} stored \
                 row(s) count as committed, the rest is sent again"
            );
            tracing::warn!(target: "trace_writer", rows = found, "{text}");
            self.remember(text);
        }
        Ok(found)
    }

    /// Whether the server applied the batch whose reply was lost; asked no
    /// longer than the close deadline allows.
    async fn batch_was_applied(&mut self, ops: &[&Op]) -> Result<bool, AttemptError> {
        let probe = self.exec.remote_batch_applied(ops);
        let applied = match self.shared.until_close_deadline() {
            Some(left) => tokio::time::timeout(left, probe)
                .await
                .map_err(|_| past_deadline())??,
            None => probe.await?,
        };
        if let Some(p) = self.pipeline.as_mut() {
            p.unanswered = false;
        }
        if applied == Some(true) {
            tracing::warn!(target: "trace_writer", ops = ops.len(),
                "the server had committed a batch whose reply was lost; not sending it again");
        }
        Ok(applied == Some(true))
    }

    /// Takes the messages that make the next batch while `current` is in
    /// flight: up to the batch bounds, stopping after a message that needs
    /// a commit first, and once the queue is empty after the reply came, a
    /// read was taken, or the close deadline passed. With `early` (the
    /// batch is sent as soon as it is collected), also once the queue has
    /// stayed empty for `linger` with a write taken: a burst that ended is
    /// sent behind `current` rather than a round trip later, when its reply
    /// is in. Step loads are answered meanwhile, and lease requests kept
    /// for the next request to carry.
    async fn collect_during(
        &mut self,
        current: &mut Stage,
        g: &mut Gathering,
        early: bool,
    ) -> Option<Terminator> {
        // When the queue last ran dry, while it stays dry.
        let mut dry_since: Option<Instant> = None;
        loop {
            if g.items.len() % 256 == 255 {
                self.serve_control(true).await;
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if g.has_read || current.answered() || self.shared.past_close_deadline() {
                        break;
                    }
                    let idle_left = if early && g.has_writes() {
                        let since = *dry_since.get_or_insert_with(Instant::now);
                        let left = self.config.linger.saturating_sub(since.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        Some(left)
                    } else {
                        None
                    };
                    match self.wait_during(current, idle_left).await {
                        WaitEnded::Message(m) => m,
                        WaitEnded::Reply(r) => {
                            current.answer(r);
                            continue;
                        }
                        WaitEnded::Idle => break,
                        WaitEnded::Other => {
                            self.serve_control(true).await;
                            continue;
                        }
                    }
                }
            };
            dry_since = None;
            match g.take(msg, &self.config) {
                BatchBound::Open => {}
                BatchBound::Full => break,
                BatchBound::EndsWith(t) => return Some(t),
            }
        }
        None
    }

    /// Waits for a message, a control message, or `current`'s reply,
    /// whichever comes first, for at most [`CLOSE_CHECK`], or at most
    /// `idle` if that is shorter ([`WaitEnded::Idle`] if nothing came).
    async fn wait_during(&mut self, current: &Stage, idle: Option<Duration>) -> WaitEnded {
        let Some(reply) = current.reply_channel() else {
            return WaitEnded::Other;
        };
        let (wait, timed_out) = match idle {
            Some(d) if d < CLOSE_CHECK => (d, WaitEnded::Idle),
            _ => (CLOSE_CHECK, WaitEnded::Other),
        };
        crossbeam_channel::select! {
            recv(self.rx) -> m => match m {
                Ok(m) => WaitEnded::Message(m),
                Err(_) => WaitEnded::Other,
            },
            recv(self.control_rx) -> c => {
                if let Ok(c) = c {
                    self.control(c, true).await;
                }
                WaitEnded::Other
            }
            recv(reply) -> r => WaitEnded::Reply(r.unwrap_or_else(|_| Err(reply_lost()))),
            default(wait) => timed_out,
        }
    }
}
