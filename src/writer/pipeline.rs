//! The remote pipeline: batches sent to a server one request each, the next
//! sent while the one before it is still in flight.
//!
//! Each batch goes through [`Stage`]s: collected, encoded, sent, answered.
//! [`Pipeline`] owns the batches past the one whose reply the actor waits
//! for, the id leases waiting to be carried by the next request, and what a
//! lost reply left to check. The actor (`actor/remote.rs`) collects the
//! batches and asks the pipeline to encode, send and wait; it holds none of
//! this state.
//!
//! A batch sent behind another is guarded (see
//! [`RemoteTx::behind`](crate::db::tx::RemoteTx::behind)): its first
//! statement fails unless the marker row of the last batch in flight before
//! it is there, so it commits only after that batch did, and otherwise
//! rolls back untouched. It also moves its own records filed under the
//! steps of every batch before it still in flight, whose real rows only
//! their replies will tell. So the server has the next batch as soon as it
//! is done with one, and the round trip hides behind the server's work.
//!
//! Up to [`MAX_AHEAD`] batches are sent behind the one whose reply the actor
//! waits for; the actor sends one as soon as it is collected (full, ended
//! by a read or a message that needs a commit, or, with a slot free, once
//! the queue stayed empty for `linger`: a burst ended) rather than wait for
//! the reply. One more is collected and encoded meanwhile, and sent as soon
//! as that reply has been handled, so that it reaches the server before the
//! batch ahead of it is done. A batch sent behind that reached the server's
//! lock first is sent again at once while the one before it is still in
//! flight (see [`Pipeline::wait_reply`]), and in its turn otherwise. A
//! batch behind one with no marker row is only encoded, and sent once the
//! reply came: thrown away and encoded again if the reply taught that a
//! step was made elsewhere, or a lease came to be carried.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Select, TryRecvError};
use tokio::task::JoinHandle;

use crate::db::exec::{Behind, EncodedTx, Executor};
use crate::db::hrana::{BatchResult, HranaClient};
use crate::db::tx::{marker, Marker};
use crate::db::Op;
use crate::error::{DbError, ErrorClass, BUG};
use crate::writer::actor::items::{Item, Terminator};
use crate::writer::actor::Shared;
use crate::writer::protocol::LeaseRequest;

/// Batches sent behind the one whose reply the actor waits for: with it,
/// at most this many plus one are in flight. One: a second one would wait
/// at the server's lock beside the first, and SQLite grants the lock in no
/// set order, so batches would often run first and be sent again (with two,
/// more did, and the rate at 20 ms fell). The code holds for any value.
pub(crate) const MAX_AHEAD: usize = 1;

/// Times a batch queued behind the one in flight is sent again at once
/// after it ran first (see [`Pipeline::wait_reply`]).
const RESENDS: u8 = 3;

/// How often a wait for the server's reply looks at the close deadline,
/// which `close()` may start while the actor waits.
pub(crate) const CLOSE_CHECK: Duration = Duration::from_millis(20);

/// The server's answer to one request, or why there is none.
pub(crate) type Answer = Result<BatchResult, DbError>;

/// A batch encoded as one request, with what goes with it.
pub(crate) struct EncodedBatch {
    pub(crate) tx: EncodedTx,
    /// Indexes in the batch's items of the writes it carries, in order.
    pub(crate) writes: Vec<usize>,
    /// The id leases carried in it, in order.
    pub(crate) leases: Vec<LeaseRequest>,
    pub(crate) multi: bool,
    /// Encoded behind a batch in flight (see [`Behind`]).
    pub(crate) behind: bool,
    /// Its marker row, which a batch sent behind it checks; `None` if it
    /// has none, and then nothing can be sent behind it.
    pub(crate) marker: Option<Marker>,
}

/// A request sent and not answered yet. Dropped unanswered, it is cut
/// short (the server may still apply it).
pub(crate) struct BatchInFlight {
    reply: Receiver<Answer>,
    task: JoinHandle<()>,
}

impl Drop for BatchInFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where one batch stands on its way to the server.
pub(crate) enum Stage {
    /// Taken off the queue; encoded in its turn.
    Collected,
    /// Encoded (behind the batches in flight, or not), not sent.
    Encoded(EncodedBatch),
    /// Sent; the reply has not been taken yet.
    Sent(EncodedBatch, BatchInFlight),
    /// Sent, and the reply taken.
    Answered(EncodedBatch, Answer),
}

impl Stage {
    /// Its encoding, at any stage past collected.
    pub(crate) fn encoded(&self) -> Option<&EncodedBatch> {
        match self {
            Stage::Collected => None,
            Stage::Encoded(b) | Stage::Sent(b, _) | Stage::Answered(b, _) => Some(b),
        }
    }

    /// Its encoding; a request in flight is cut short.
    pub(crate) fn into_encoded(self) -> Option<EncodedBatch> {
        match self {
            Stage::Collected => None,
            Stage::Encoded(b) | Stage::Sent(b, _) | Stage::Answered(b, _) => Some(b),
        }
    }

    /// Whether its request went out.
    pub(crate) fn is_sent(&self) -> bool {
        matches!(self, Stage::Sent(..) | Stage::Answered(..))
    }

    /// Whether the reply is in: taken off the channel (sent → answered) if
    /// it just came.
    pub(crate) fn answered(&mut self) -> bool {
        if let Stage::Sent(_, flight) = self {
            match flight.reply.try_recv() {
                Ok(answer) => self.answer(answer),
                Err(TryRecvError::Disconnected) => self.answer(Err(reply_lost())),
                Err(TryRecvError::Empty) => {}
            }
        }
        matches!(self, Stage::Answered(..))
    }

    /// Sent → answered with `answer` (the request's task has ended).
    pub(crate) fn answer(&mut self, answer: Answer) {
        if let Stage::Sent(..) = self {
            if let Stage::Sent(b, _) = std::mem::replace(self, Stage::Collected) {
                *self = Stage::Answered(b, answer);
            }
        }
    }

    /// The channel its reply comes on, while it is sent and not answered.
    pub(crate) fn reply_channel(&self) -> Option<&Receiver<Answer>> {
        match self {
            Stage::Sent(_, flight) => Some(&flight.reply),
            _ => None,
        }
    }
}

/// A batch collected while a batch before it was in flight, waiting for its
/// turn at whatever stage it reached.
pub(crate) struct QueuedBatch {
    pub(crate) items: Vec<Item>,
    pub(crate) terminator: Option<Terminator>,
    pub(crate) stage: Stage,
    /// Times it was sent again after it ran first.
    resent: u8,
}

impl QueuedBatch {
    /// A batch just collected.
    pub(crate) fn collected(items: Vec<Item>, terminator: Option<Terminator>) -> Self {
        Self {
            items,
            terminator,
            stage: Stage::Collected,
            resent: 0,
        }
    }
}

/// The batch whose reply the actor waits for: its items and how it was
/// encoded.
#[derive(Clone, Copy)]
pub(crate) struct InFlight<'a> {
    pub(crate) items: &'a [Item],
    pub(crate) batch: &'a EncodedBatch,
}

/// The batches on their way to a remote server, past the one whose reply
/// the actor waits for.
pub(crate) struct Pipeline {
    client: Arc<HranaClient>,
    /// Collected after the batch being applied, in order, each at its stage;
    /// all but the last are sent (see [`MAX_AHEAD`]).
    pub(crate) queued: VecDeque<QueuedBatch>,
    /// Id leases asked for while a batch is being collected or is in
    /// flight: the next request carries them, or they are served alone
    /// once the batches are done.
    leases_to_carry: Vec<LeaseRequest>,
    /// The last request got no answer: before it is sent again, check
    /// whether the server applied it.
    pub(crate) unanswered: bool,
    /// A reply of the current batch was lost (it stays set through the
    /// batch's retries): a refused resend is checked against the rows
    /// stored.
    pub(crate) lost_reply: bool,
    /// Writes of the current batch set aside because their rows were found
    /// stored after a lost reply: committed, by the request whose reply was
    /// lost.
    pub(crate) found_stored: u64,
}

/// The error of a request whose task ended without a reply.
pub(crate) fn reply_lost() -> DbError {
    DbError::new(
        ErrorClass::Transient,
        "the request's task ended without a reply",
    )
}

/// The error of a wait cut short at the close deadline.
pub(crate) fn past_deadline() -> DbError {
    DbError::new(
        ErrorClass::Transient,
        "the close deadline passed while the server had the batch",
    )
}

/// Sends `batch` from a task of the current runtime.
fn send_request(
    client: &Arc<HranaClient>,
    batch: &EncodedBatch,
    shared: &Arc<Shared>,
) -> BatchInFlight {
    let (tx, reply) = crossbeam_channel::bounded(1);
    let client = client.clone();
    let body = batch.tx.body.clone();
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
    BatchInFlight { reply, task }
}

/// Indexes of the writes of `items` not set aside as failed.
pub(crate) fn unfailed_writes(items: &[Item]) -> Vec<usize> {
    (0..items.len())
        .filter(|&k| matches!(items[k], Item::Write { failed: false, .. }))
        .collect()
}

/// The operations of `items` at `writes`.
pub(crate) fn ops_of<'a>(items: &'a [Item], writes: &[usize]) -> Vec<&'a Op> {
    writes
        .iter()
        .filter_map(|&k| match &items[k] {
            Item::Write { op, .. } => Some(op),
            _ => None,
        })
        .collect()
}

/// Encodes the `writes` of `items`, behind the batches in flight if
/// `behind` says so, with `leases` (taken); `None` when there is nothing to
/// send.
fn encode_batch(
    leases: &mut Vec<LeaseRequest>,
    exec: &mut Executor,
    items: &[Item],
    writes: Vec<usize>,
    multi: bool,
    behind: Option<Behind<'_>>,
) -> Result<Option<EncodedBatch>, DbError> {
    if writes.is_empty() && leases.is_empty() {
        return Ok(None);
    }
    let ops = ops_of(items, &writes);
    let sizes: Vec<_> = leases.iter().map(|r| (r.table, r.size)).collect();
    let tx = exec.prepare_remote(&ops, multi, &sizes, behind)?;
    Ok(Some(EncodedBatch {
        tx,
        marker: marker(&ops),
        writes,
        leases: std::mem::take(leases),
        multi,
        behind: behind.is_some(),
    }))
}

impl Pipeline {
    pub(crate) fn new(client: Arc<HranaClient>) -> Self {
        Self {
            client,
            queued: VecDeque::new(),
            leases_to_carry: Vec::new(),
            unanswered: false,
            lost_reply: false,
            found_stored: 0,
        }
    }

    /// Keeps a lease for the next request to carry.
    pub(crate) fn carry(&mut self, req: LeaseRequest) {
        self.leases_to_carry.push(req);
    }

    /// Whether leases wait to be carried.
    pub(crate) fn has_leases(&self) -> bool {
        !self.leases_to_carry.is_empty()
    }

    /// The leases no request carried: to be served alone.
    pub(crate) fn take_leases(&mut self) -> Vec<LeaseRequest> {
        std::mem::take(&mut self.leases_to_carry)
    }

    /// Gives the leases of a batch that will not be sent as encoded back to
    /// those waiting to be carried, ahead of them. A request in flight is
    /// cut short.
    pub(crate) fn discard(&mut self, stage: Stage) {
        if let Some(b) = stage.into_encoded() {
            self.give_back(b.leases);
        }
    }

    /// Puts `leases`, carried by a request that did not commit, back ahead
    /// of those waiting to be carried.
    pub(crate) fn give_back(&mut self, leases: Vec<LeaseRequest>) {
        self.leases_to_carry.splice(0..0, leases);
    }

    /// Sends `batch`.
    pub(crate) fn send(&self, batch: &EncodedBatch, shared: &Arc<Shared>) -> BatchInFlight {
        send_request(&self.client, batch, shared)
    }

    /// Whether `batch`, encoded earlier, is still right to send as it is:
    /// encoded as `behind` says, with `multi`, and nothing since changed
    /// where its records go or which leases it would carry.
    pub(crate) fn still_right(
        &self,
        exec: &Executor,
        batch: &EncodedBatch,
        multi: bool,
        behind: bool,
    ) -> bool {
        batch.behind == behind
            && batch.multi == multi
            && self.leases_to_carry.is_empty()
            && exec.is_current(&batch.tx)
    }

    /// Encodes the `writes` of `items` with the leases waiting to be
    /// carried; `None` when there is nothing to send.
    pub(crate) fn encode(
        &mut self,
        exec: &mut Executor,
        items: &[Item],
        writes: Vec<usize>,
        multi: bool,
    ) -> Result<Option<EncodedBatch>, DbError> {
        let leases = &mut self.leases_to_carry;
        encode_batch(leases, exec, items, writes, multi, None)
    }

    /// Encodes `next`, which comes after `first` and the first `before`
    /// queued batches: behind the last of them if it has a marker row (see
    /// [`Behind`]), moving its records filed under the steps of any of
    /// them; else as a batch of its own, to be sent once their replies are
    /// in. `None` when there is nothing to send or it cannot be encoded
    /// (the error shows again, and is reported, when it is sent in its
    /// turn).
    pub(crate) fn encode_after(
        &mut self,
        exec: &mut Executor,
        first: InFlight<'_>,
        before: usize,
        next: &[Item],
        multi: bool,
    ) -> Option<EncodedBatch> {
        // Everything in flight before it, oldest first.
        let mut in_flight = ops_of(first.items, &first.batch.writes);
        let mut last = first.batch.marker;
        for b in self.queued.iter().take(before) {
            let encoded = b.stage.encoded();
            last = encoded.and_then(|r| r.marker);
            if let Some(r) = encoded {
                in_flight.extend(ops_of(&b.items, &r.writes));
            }
        }
        let behind = last.map(|marker| Behind {
            marker,
            ops: &in_flight,
        });
        let leases = &mut self.leases_to_carry;
        encode_batch(leases, exec, next, unfailed_writes(next), multi, behind)
            .ok()
            .flatten()
    }

    /// Waits for the reply to `current`, the batch being applied, but not
    /// past the close deadline (checked every [`CLOSE_CHECK`], since a close
    /// may start meanwhile); past it the request is cut short, and the
    /// server may or may not apply it. Returns its encoding and the answer.
    ///
    /// Meanwhile, a queued batch whose request reached the server's lock
    /// first and so changed nothing (see
    /// [`TxShape::ran_first`](crate::db::tx::TxShape::ran_first)) is sent
    /// again at once, up to [`RESENDS`] times, to wait behind the batch in
    /// flight this time rather than a round trip after it.
    pub(crate) fn wait_reply(
        &mut self,
        current: Stage,
        shared: &Arc<Shared>,
    ) -> (Option<EncodedBatch>, Answer) {
        let (batch, flight) = match current {
            Stage::Sent(batch, flight) => (batch, flight),
            Stage::Answered(batch, answer) => return (Some(batch), answer),
            other => {
                let bug = DbError::new(ErrorClass::Fatal, BUG);
                return (other.into_encoded(), Err(bug));
            }
        };
        loop {
            // A reply that is in is taken, even past the deadline.
            match flight.reply.try_recv() {
                Ok(answer) => return (Some(batch), answer),
                Err(TryRecvError::Disconnected) => return (Some(batch), Err(reply_lost())),
                Err(TryRecvError::Empty) => {}
            }
            let slice = match shared.until_close_deadline() {
                // Dropping `flight` cuts the request short.
                Some(left) if left.is_zero() => return (Some(batch), Err(past_deadline())),
                Some(left) => left.min(CLOSE_CHECK),
                None => CLOSE_CHECK,
            };
            let (k, answer) = {
                let mut select = Select::new();
                select.recv(&flight.reply);
                let mut queued = Vec::new();
                for (k, next) in self.queued.iter().enumerate() {
                    if let Some(rx) = next.stage.reply_channel() {
                        select.recv(rx);
                        queued.push((k, rx));
                    }
                }
                let Ok(op) = select.select_timeout(slice) else {
                    continue;
                };
                let at = op.index();
                if at == 0 {
                    (None, op.recv(&flight.reply))
                } else {
                    let Some(&(k, rx)) = queued.get(at - 1) else {
                        continue;
                    };
                    (Some(k), op.recv(rx))
                }
            };
            let answer = answer.unwrap_or_else(|_| Err(reply_lost()));
            let Some(k) = k else {
                return (Some(batch), answer);
            };
            let Some(next) = self.queued.get_mut(k) else {
                continue;
            };
            // Not past the close deadline: a request sent then is cut short
            // and spilled, and the server may apply it all the same.
            let again = match (&answer, next.stage.encoded()) {
                (Ok(result), Some(r)) if next.resent < RESENDS && !shared.past_close_deadline() => {
                    r.tx.ran_first(result)
                }
                _ => false,
            };
            if again {
                if let Stage::Sent(b, _) = std::mem::replace(&mut next.stage, Stage::Collected) {
                    next.resent += 1;
                    let flight = send_request(&self.client, &b, shared);
                    next.stage = Stage::Sent(b, flight);
                }
            } else {
                next.stage.answer(answer);
            }
        }
    }
}
