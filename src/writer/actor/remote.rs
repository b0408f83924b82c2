//! A batch on a remote server: one request, and while it is in flight the
//! next batches are collected, encoded and sent behind it.
//!
//! The request runs on a task of the actor's runtime, which a worker thread
//! drives (see `spawn`), so the actor thread is free meanwhile: it takes the
//! queued messages that make the next batch, serves step loads, keeps lease
//! requests to ride along, and encodes that batch. Then, if the last batch
//! in flight has a row to check (see [`marker`]), the next one is sent at
//! once, behind it: its first statement fails unless that row is there, so
//! it commits only after that batch did, and otherwise rolls back untouched
//! (see [`Behind`]). It also moves its own records filed under the steps of
//! every batch before it still in flight, whose real rows only their
//! replies will tell. So the server has the next batch as soon as it is
//! done with one, and the round trip hides behind the server's work.
//!
//! Up to [`MAX_AHEAD`] batches are queued behind the one whose reply the
//! actor waits for, so the writer has at most two in flight (a request cut
//! short at the close deadline may still run on the server). One more is
//! collected and encoded meanwhile, and sent as soon as the reply has been
//! handled, so that it reaches the server before the batch ahead of it is
//! done. A batch
//! sent behind that reached the server's lock first is sent again at once
//! while the one before it is still in flight (see `wait_reply`), and in
//! its turn otherwise. A batch behind one with no row to check is only
//! encoded, and sent once the reply came: thrown away and encoded again if
//! the reply taught that a step was made elsewhere, or a lease came to
//! ride.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use tokio::task::JoinHandle;

use crate::db::exec::{Behind, EncodedTx, RemoteBatch};
use crate::db::hrana::{BatchResult, HranaClient};
use crate::db::tx::marker;
use crate::db::{Op, Table};
use crate::error::{DbError, ErrorClass};
use crate::writer::actor::{Actor, AttemptError, Gathering, Item, Msg, Shared, Taken, Terminator};
use crate::writer::protocol::LeaseRequest;
use crate::writer::stats::Counters;

/// Batches queued behind the one whose reply the actor waits for: with it,
/// at most this many plus one are in flight. One: a second one would wait
/// at the server's lock beside the first, and SQLite grants the lock in no
/// set order, so batches would often run first and be sent again (with two,
/// more did, and the rate at 20 ms fell; see the README).
pub(super) const MAX_AHEAD: usize = 1;

/// Times a batch queued behind the one in flight is sent again at once
/// after it ran first (see `wait_reply`).
const RESENDS: u8 = 3;

/// How often a wait for the server's reply looks at the close deadline,
/// which `close()` may start while the actor waits.
const CLOSE_CHECK: Duration = Duration::from_millis(20);

/// A batch encoded as one request, with what goes with it.
pub(super) struct EncodedBatch {
    batch: EncodedTx,
    /// Indexes in the batch's items of the writes it carries, in order.
    writes: Vec<usize>,
    /// The id leases riding in it, in order.
    leases: Vec<LeaseRequest>,
    multi: bool,
    /// Encoded behind a batch in flight (see [`Behind`]).
    behind: bool,
}

/// A batch collected (and perhaps encoded, or even sent) while a batch
/// before it was in flight.
pub(super) struct Next {
    pub(super) items: Vec<Item>,
    pub(super) terminator: Option<Terminator>,
    /// The batch encoded, or sent, as `sent` says.
    pub(super) ready: Option<EncodedBatch>,
    /// `ready` went out behind the batch before it (see [`Behind`]).
    pub(super) sent: Option<BatchInFlight>,
    /// Times `sent` went out again after it ran first.
    pub(super) resent: u8,
}

/// A request sent and not answered yet. Dropped unanswered, it is cut
/// short (the server may still apply it).
pub(super) struct BatchInFlight {
    reply: Receiver<Result<BatchResult, DbError>>,
    task: JoinHandle<()>,
    /// The reply, once it was taken off the channel.
    got: Option<Result<BatchResult, DbError>>,
}

fn reply_lost() -> DbError {
    DbError::new(
        ErrorClass::Transient,
        "the request's task ended without a reply",
    )
}

fn past_deadline() -> DbError {
    DbError::new(
        ErrorClass::Transient,
        "the close deadline passed while the server had the batch",
    )
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BatchInFlight {
    /// Sends `batch` from a task of the current runtime.
    fn send(client: &Arc<HranaClient>, batch: &EncodedTx, shared: &Arc<Shared>) -> BatchInFlight {
        let (tx, reply) = crossbeam_channel::bounded(1);
        let client = client.clone();
        let body = batch.body.clone();
        let shared = shared.clone();
        let task = tokio::spawn(async move {
            // Counted in flight until the task ends or is aborted.
            let timer = shared.metrics.request();
            let result = client.send(body).await;
            if result.is_ok() {
                timer.answered();
            }
            let _ = tx.send(result);
        });
        BatchInFlight {
            reply,
            task,
            got: None,
        }
    }

    /// Whether the reply is in (taken off the channel if it just came).
    fn answered(&mut self) -> bool {
        if self.got.is_none() {
            match self.reply.try_recv() {
                Ok(reply) => self.got = Some(reply),
                Err(TryRecvError::Disconnected) => self.got = Some(Err(reply_lost())),
                Err(TryRecvError::Empty) => {}
            }
        }
        self.got.is_some()
    }
}

/// What woke a wait while a request is in flight.
enum Woke {
    Msg(Msg),
    Reply(Result<BatchResult, DbError>),
    Other,
}

impl Actor {
    /// One try at a batch on a remote server: one request, one transaction.
    /// `ready` is the batch encoded in advance, used if it is still right,
    /// and `sent` its request if it already went out behind the batch
    /// before. With `overlap`, the batches that follow are collected while
    /// the request is in flight and queued in `ahead`, sent behind it where
    /// they can be (see [`Actor::send_ahead`]). Reads queued in the batch are
    /// answered once it committed.
    pub(super) async fn attempt_remote(
        &mut self,
        items: &mut [Item],
        multi: bool,
        mut ready: Option<EncodedBatch>,
        sent: Option<BatchInFlight>,
        overlap: bool,
    ) -> Result<(), AttemptError> {
        let Some(client) = self.exec.pipeline_client() else {
            self.discard_encoded(ready);
            return Err(AttemptError::Fatal(DbError::new(
                ErrorClass::Fatal,
                "no remote pipeline on a local database",
            )));
        };
        let (ready, mut flight) = match (ready.take(), sent) {
            (Some(r), Some(flight)) => (r, flight),
            (r, _) => match self.send(&client, items, multi, r).await? {
                Some(sent) => sent,
                None => {
                    self.answer_reads(items).await;
                    return Ok(());
                }
            },
        };
        if overlap {
            self.send_ahead(&client, items, &ready, &mut flight).await;
        }
        let reply = self.wait_reply(&client, flight);
        let EncodedBatch {
            batch,
            writes,
            mut leases,
            ..
        } = ready;
        let outcome = reply.and_then(|r| self.exec.finish_remote(batch, r));
        if !matches!(outcome, Ok(RemoteBatch::Committed(_))) {
            // Its leases ride in the next try, or are served alone after the
            // batch; so do those of the next batch, if it was only encoded,
            // rather than wait out this one's retries.
            self.riding.splice(0..0, std::mem::take(&mut leases));
            if let Some(n) = self.ahead.back_mut().filter(|n| n.sent.is_none()) {
                let ready = n.ready.take();
                self.discard_encoded(ready);
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
                if self.lost_reply && failed.iter().any(|(_, e)| e.class == ErrorClass::Operation) {
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
                self.ambiguous = true;
                self.lost_reply = true;
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
        client: &Arc<HranaClient>,
        items: &[Item],
        multi: bool,
        mut ready: Option<EncodedBatch>,
    ) -> Result<Option<(EncodedBatch, BatchInFlight)>, AttemptError> {
        let writes = unfailed_writes(items);
        if self.ambiguous {
            // The reply to the last try was lost: if the server committed
            // it, sending it again would duplicate nothing (ids are fixed)
            // but fail on every row. Leases that rode in it are taken again
            // (the lost blocks are only a gap).
            self.discard_encoded(ready.take());
            let ops = ops_of(items, &writes);
            if self.batch_was_applied(&ops).await? {
                return Ok(None);
            }
        }
        let ready = match ready {
            // One encoded behind the batch before is encoded again: that
            // batch's outcome is known now, and its marker may be gone.
            Some(r)
                if r.multi == multi
                    && !r.behind
                    && r.writes == writes
                    && self.riding.is_empty()
                    && self.exec.is_current(&r.batch) =>
            {
                r
            }
            stale => {
                self.discard_encoded(stale);
                match self.prepare(items, writes, multi, None) {
                    Ok(Some(r)) => r,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(AttemptError::Fatal(e)),
                }
            }
        };
        let flight = BatchInFlight::send(client, &ready.batch, &self.shared);
        Ok(Some((ready, flight)))
    }

    /// While `flight` (the request of `ready`, of `items`) is in flight:
    /// first sends the batch queued next behind this one, if it was not sent
    /// yet (it was collected while the batch before this one was in flight,
    /// and encoded then if it could be); then collects the batches that
    /// follow and sends each behind the last one in flight, up to
    /// [`MAX_AHEAD`] of them, as long as that one has a marker row and
    /// nothing queued waits for a commit first. One more is collected and
    /// encoded, to be sent at the next batch's turn, as soon as this reply
    /// has been handled. A batch that cannot be sent is only encoded, or, if
    /// the reply is in, left as it is; it ends the queue.
    async fn send_ahead(
        &mut self,
        client: &Arc<HranaClient>,
        items: &[Item],
        ready: &EncodedBatch,
        flight: &mut BatchInFlight,
    ) {
        if let Some(front) = self.ahead.pop_front() {
            let front = if front.sent.is_none() && !unfailed_writes(&front.items).is_empty() {
                self.send_encoded(client, items, ready, front, flight)
            } else {
                front
            };
            self.ahead.push_front(front);
        }
        while self.ahead.len() <= MAX_AHEAD
            && self
                .ahead
                .back()
                .is_none_or(|b| b.sent.is_some() && b.terminator.is_none())
        {
            let (next_items, terminator) = self.collect_during(flight).await;
            if next_items.is_empty() && terminator.is_none() {
                return;
            }
            let send = self.ahead.len() < MAX_AHEAD;
            let next = self.get_ready(client, items, ready, next_items, terminator, flight, send);
            self.ahead.push_back(next);
        }
    }

    /// Sends `next`, collected while the batch before this one was in
    /// flight, behind this one (the request of `ready`, of `items`): as
    /// encoded if that is still right (it was encoded behind this one, and
    /// nothing since changed where its records go or which leases ride),
    /// else encoded again. Not if this one's reply is in: then it is sent in
    /// its turn, knowing how this one ended.
    fn send_encoded(
        &mut self,
        client: &Arc<HranaClient>,
        items: &[Item],
        ready: &EncodedBatch,
        mut next: Next,
        flight: &mut BatchInFlight,
    ) -> Next {
        if flight.answered() {
            return next;
        }
        let current = next.ready.as_ref().is_some_and(|r| {
            r.behind
                && r.multi == self.multi_row
                && self.riding.is_empty()
                && self.exec.is_current(&r.batch)
        });
        match &next.ready {
            Some(r) if current => {
                next.sent = Some(BatchInFlight::send(client, &r.batch, &self.shared));
                next
            }
            _ => {
                let stale = next.ready.take();
                self.discard_encoded(stale);
                // Nothing else is queued: it goes behind this batch.
                self.get_ready(
                    client,
                    items,
                    ready,
                    next.items,
                    next.terminator,
                    flight,
                    true,
                )
            }
        }
    }

    /// The batch collected after `items` and those queued in `ahead`, while
    /// `flight` (the request of `ready`, of `items`) is in flight: encoded
    /// behind the last of them if it can be and, with `send`, sent; encoded
    /// only if it cannot; left as it is if the reply is in.
    #[allow(clippy::too_many_arguments)]
    fn get_ready(
        &mut self,
        client: &Arc<HranaClient>,
        items: &[Item],
        ready: &EncodedBatch,
        next_items: Vec<Item>,
        terminator: Option<Terminator>,
        flight: &mut BatchInFlight,
        send: bool,
    ) -> Next {
        let mut next = Next {
            items: next_items,
            terminator,
            ready: None,
            sent: None,
            resent: 0,
        };
        let writes = unfailed_writes(&next.items);
        // A batch of reads and leases only is left to its turn: its leases
        // are served alone if nothing else comes to carry them. One that
        // would go behind this batch, whose reply is in, is left to its turn
        // too (one behind a queued batch still in flight is not).
        if writes.is_empty()
            || (self.ahead.is_empty() && flight.answered())
            || self.spilling
            || self.shared.past_close_deadline()
        {
            return next;
        }
        // Everything in flight before it, oldest first: it goes behind the
        // last, and moves its records filed under the steps of any of them.
        let ahead = std::mem::take(&mut self.ahead);
        let mut in_flight = ops_of(items, &ready.writes);
        let mut last = marker(&in_flight);
        for b in &ahead {
            let ops = b
                .ready
                .as_ref()
                .map_or_else(Vec::new, |r| ops_of(&b.items, &r.writes));
            last = marker(&ops);
            in_flight.extend(ops);
        }
        let behind = last.map(|marker| Behind {
            marker,
            ops: &in_flight,
        });
        // An encoding error shows again, and is reported, when the batch is
        // sent in its turn.
        next.ready = self
            .prepare(&next.items, writes, self.multi_row, behind)
            .ok()
            .flatten();
        if let (Some(r), Some(_), true) = (&next.ready, behind, send) {
            next.sent = Some(BatchInFlight::send(client, &r.batch, &self.shared));
        }
        drop(in_flight);
        self.ahead = ahead;
        next
    }

    /// Waits for `flight`'s reply, but not past the close deadline (checked
    /// every [`CLOSE_CHECK`], since a close may start meanwhile); past it the
    /// request is dropped, and the server may or may not apply it.
    ///
    /// Meanwhile, a batch queued behind it whose request reached the
    /// server's lock first and so changed nothing (see
    /// [`Executor::ran_first`]) is sent again at once, up to [`RESENDS`]
    /// times, to wait behind the batch in flight this time rather than a
    /// round trip after it.
    fn wait_reply(
        &mut self,
        client: &Arc<HranaClient>,
        mut flight: BatchInFlight,
    ) -> Result<BatchResult, DbError> {
        loop {
            // A reply that is in is taken, even past the deadline.
            if flight.answered() {
                if let Some(reply) = flight.got.take() {
                    return reply;
                }
            }
            let slice = match self.shared.until_close_deadline() {
                // Dropping `flight` cuts the request short.
                Some(left) if left.is_zero() => return Err(past_deadline()),
                Some(left) => left.min(CLOSE_CHECK),
                None => CLOSE_CHECK,
            };
            let (k, reply) = {
                let mut select = Select::new();
                select.recv(&flight.reply);
                let mut queued = Vec::new();
                for (k, next) in self.ahead.iter().enumerate() {
                    if let Some(f) = next.sent.as_ref().filter(|f| f.got.is_none()) {
                        select.recv(&f.reply);
                        queued.push((k, &f.reply));
                    }
                }
                let Ok(op) = select.select_timeout(slice) else {
                    continue;
                };
                let at = op.index();
                if at == 0 {
                    (None, op.recv(&flight.reply))
                } else {
                    let (k, rx) = queued[at - 1];
                    (Some(k), op.recv(rx))
                }
            };
            let reply = reply.unwrap_or_else(|_| Err(reply_lost()));
            let Some(k) = k else {
                return reply;
            };
            let Some(next) = self.ahead.get_mut(k) else {
                continue;
            };
            // Not past the close deadline: a request sent then is cut short
            // and spilled, and the server may apply it all the same.
            let again = match (&reply, &next.ready) {
                (Ok(result), Some(r))
                    if next.resent < RESENDS && !self.shared.past_close_deadline() =>
                {
                    r.batch.ran_first(result)
                }
                _ => false,
            };
            match (again, &next.ready) {
                (true, Some(r)) => {
                    next.resent += 1;
                    next.sent = Some(BatchInFlight::send(client, &r.batch, &self.shared));
                }
                _ => {
                    if let Some(f) = next.sent.as_mut() {
                        f.got = Some(reply);
                    }
                }
            }
        }
    }

    /// Gives the leases of a batch that will not be sent as encoded back to
    /// those waiting to ride, ahead of them: they ride in the next request,
    /// or are served alone after the batch.
    pub(super) fn discard_encoded(&mut self, ready: Option<EncodedBatch>) {
        if let Some(r) = ready {
            self.riding.splice(0..0, r.leases);
        }
    }

    /// Encodes the `writes` of `items` with the leases waiting to ride;
    /// `None` when there is nothing to send.
    fn prepare(
        &mut self,
        items: &[Item],
        writes: Vec<usize>,
        multi: bool,
        behind: Option<Behind<'_>>,
    ) -> Result<Option<EncodedBatch>, DbError> {
        if writes.is_empty() && self.riding.is_empty() {
            return Ok(None);
        }
        let ops = ops_of(items, &writes);
        let sizes: Vec<_> = self.riding.iter().map(|r| (r.table, r.size)).collect();
        let batch = self.exec.prepare_remote(&ops, multi, &sizes, behind)?;
        Ok(Some(EncodedBatch {
            batch,
            writes,
            leases: std::mem::take(&mut self.riding),
            multi,
            behind: behind.is_some(),
        }))
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
            self.found_stored += found as u64;
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
        self.ambiguous = false;
        if applied == Some(true) {
            tracing::warn!(target: "trace_writer", ops = ops.len(),
                "the server had committed a batch whose reply was lost; not sending it again");
        }
        Ok(applied == Some(true))
    }

    /// Takes the messages that make the next batch while `flight` is in
    /// flight: up to the batch bounds, stopping after a message that needs a
    /// commit first, and once the queue is empty after the reply came, a
    /// read was taken, or the close deadline passed. Step loads are answered
    /// meanwhile, and lease requests kept to ride in the next request.
    async fn collect_during(
        &mut self,
        flight: &mut BatchInFlight,
    ) -> (Vec<Item>, Option<Terminator>) {
        let mut g = Gathering::default();
        loop {
            if g.items.len() % 256 == 255 {
                self.serve_control(true).await;
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if g.has_read || flight.answered() || self.shared.past_close_deadline() {
                        break;
                    }
                    match self.wait_during(flight).await {
                        Woke::Msg(m) => m,
                        Woke::Reply(r) => {
                            flight.got = Some(r);
                            continue;
                        }
                        Woke::Other => {
                            self.serve_control(true).await;
                            continue;
                        }
                    }
                }
            };
            match g.take(msg, &self.config) {
                Taken::More => {}
                Taken::Full => break,
                Taken::End(t) => return (g.items, Some(t)),
            }
        }
        (g.items, None)
    }

    /// Waits for a message, a control message, or the reply, whichever
    /// comes first, for at most [`CLOSE_CHECK`].
    async fn wait_during(&mut self, flight: &BatchInFlight) -> Woke {
        crossbeam_channel::select! {
            recv(self.rx) -> m => match m {
                Ok(m) => Woke::Msg(m),
                Err(_) => Woke::Other,
            },
            recv(self.control_rx) -> c => {
                if let Ok(c) = c {
                    self.control(c, true).await;
                }
                Woke::Other
            }
            recv(flight.reply) -> r => Woke::Reply(r.unwrap_or_else(|_| Err(reply_lost()))),
            default(CLOSE_CHECK) => Woke::Other,
        }
    }
}

/// Indexes of the writes of `items` not set aside as failed.
fn unfailed_writes(items: &[Item]) -> Vec<usize> {
    (0..items.len())
        .filter(|&k| matches!(items[k], Item::Write { failed: false, .. }))
        .collect()
}

fn ops_of<'a>(items: &'a [Item], writes: &[usize]) -> Vec<&'a Op> {
    writes
        .iter()
        .filter_map(|&k| match &items[k] {
            Item::Write { op, .. } => Some(op),
            _ => None,
        })
        .collect()
}
