//! A batch on a remote server: one request, and while it is in flight the
//! next batch is collected and encoded.
//!
//! The request runs on a task of the actor's runtime, which a worker thread
//! drives (see `spawn`), so the actor thread is free meanwhile: it takes the
//! queued messages that make the next batch, serves leases and step loads,
//! and encodes that batch. The next batch is still sent only once this one's
//! outcome is known, since it depends on it: a batch that rolled back is
//! sent again first, and one that committed may have taught the executor
//! that a step was made elsewhere, which changes where the next batch's
//! records go (then the encoded request is thrown away and made again).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use tokio::task::JoinHandle;

use crate::db::exec::{PreparedRemote, RemoteBatch};
use crate::db::hrana::{BatchResult, HranaClient};
use crate::db::Op;
use crate::error::{DbError, ErrorClass};
use crate::writer::actor::batch::AttemptError;
use crate::writer::actor::{Actor, Gathering, Item, Msg, Taken, Terminator};
use crate::writer::ids::LeaseRequest;
use crate::writer::stats::Counters;

/// How often a wait for the server's reply looks at the close deadline,
/// which `close()` may start while the actor waits.
const CLOSE_CHECK: Duration = Duration::from_millis(20);

/// A batch encoded as one request, with what goes with it.
pub(super) struct Ready {
    batch: PreparedRemote,
    /// Indexes in the batch's items of the writes it carries, in order.
    writes: Vec<usize>,
    /// The id leases riding in it, in order.
    leases: Vec<LeaseRequest>,
    multi: bool,
}

/// The next batch, collected (and perhaps encoded) while the one before it
/// was in flight.
pub(super) struct Next {
    pub(super) items: Vec<Item>,
    pub(super) terminator: Option<Terminator>,
    pub(super) ready: Option<Ready>,
}

/// A request sent and not answered yet.
struct Flight {
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

impl Flight {
    /// Sends `batch` from a task of the current runtime.
    fn send(client: &Arc<HranaClient>, batch: &PreparedRemote) -> Flight {
        let (tx, reply) = crossbeam_channel::bounded(1);
        let client = client.clone();
        let body = batch.body.clone();
        let task = tokio::spawn(async move {
            let _ = tx.send(client.send(body).await);
        });
        Flight {
            reply,
            task,
            got: None,
        }
    }

    fn landed(&self) -> bool {
        self.got.is_some()
    }

    /// Waits for the reply, but not past the close deadline that
    /// `close_left` reports (checked every [`CLOSE_CHECK`], since a close
    /// may start meanwhile). Past it the request is dropped: the server may
    /// or may not apply it.
    fn wait(mut self, close_left: impl Fn() -> Option<Duration>) -> Result<BatchResult, DbError> {
        if let Some(reply) = self.got.take() {
            return reply;
        }
        loop {
            let slice = match close_left() {
                Some(left) if left.is_zero() => {
                    self.task.abort();
                    return Err(past_deadline());
                }
                Some(left) => left.min(CLOSE_CHECK),
                None => CLOSE_CHECK,
            };
            match self.reply.recv_timeout(slice) {
                Ok(reply) => return reply,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(reply_lost()),
            }
        }
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
    /// `ready` is the batch encoded in advance, used if it is still right.
    /// With `next`, the next batch is collected (and encoded, if the reply
    /// has not come by then) while the request is in flight. Reads queued in
    /// the batch are answered once it committed.
    pub(super) async fn attempt_remote(
        &mut self,
        items: &mut [Item],
        multi: bool,
        mut ready: Option<Ready>,
        next: Option<&mut Option<Next>>,
    ) -> Result<(), AttemptError> {
        let Some(client) = self.exec.pipeline_client() else {
            return Err(AttemptError::Fatal(DbError::new(
                ErrorClass::Fatal,
                "no remote pipeline on a local database",
            )));
        };
        let writes = unfailed_writes(items);
        if self.ambiguous {
            // The reply to the last try was lost: if the server committed
            // it, sending it again would duplicate nothing (ids are fixed)
            // but fail on every row. Leases that rode in it are taken again
            // (the lost blocks are only a gap).
            self.unready(ready.take());
            let ops = ops_of(items, &writes);
            if self.batch_was_applied(&ops).await? {
                self.answer_reads(items).await;
                return Ok(());
            }
        }
        let ready = match ready {
            Some(r)
                if r.multi == multi
                    && r.writes == writes
                    && self.riding.is_empty()
                    && self.exec.is_current(&r.batch) =>
            {
                r
            }
            stale => {
                self.unready(stale);
                match self.prepare(items, writes, multi) {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        self.answer_reads(items).await;
                        return Ok(());
                    }
                    Err(e) => return Err(AttemptError::Fatal(e)),
                }
            }
        };
        let mut flight = Flight::send(&client, &ready.batch);
        if let Some(slot) = next {
            let (items, terminator) = self.collect_during(&mut flight).await;
            // Encoded now, while the server works, unless the reply is here
            // (then it is encoded when sent, knowing what this one taught).
            let encoded = if flight.landed() || self.spilling {
                None
            } else {
                let writes = unfailed_writes(&items);
                self.prepare(&items, writes, self.multi_row).ok().flatten()
            };
            *slot = Some(Next {
                items,
                terminator,
                ready: encoded,
            });
        }
        let shared = self.shared.clone();
        let reply = flight.wait(|| shared.until_close_deadline());
        let Ready {
            batch,
            writes,
            leases,
            ..
        } = ready;
        let outcome = reply.and_then(|r| self.exec.finish_remote(batch, r));
        if let Ok(RemoteBatch::Committed(blocks)) = &outcome {
            for (req, ids) in leases.into_iter().zip(blocks.iter().cloned()) {
                Counters::add(&self.shared.counters.id_leases, 1);
                self.shared.ids.grant(req.table, ids);
            }
            self.answer_reads(items).await;
            return Ok(());
        }
        // Not committed: its leases ride in the next try, or are served
        // alone after the batch.
        self.riding.splice(0..0, leases);
        match outcome {
            Ok(RemoteBatch::Committed(_)) => Ok(()),
            Ok(RemoteBatch::MultiRowFailed(e)) if e.is_transient() => {
                Err(AttemptError::Transient(e))
            }
            Ok(RemoteBatch::MultiRowFailed(_)) => Err(AttemptError::MultiRowFailed),
            Ok(RemoteBatch::Failed(failed)) => {
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
                        self.record_failure(&op, &e);
                    }
                }
                // The server rolled back: send the rest again.
                Err(AttemptError::Restart)
            }
            Err(e) if e.is_transient() => {
                // No answer: the server may have committed before the reply
                // was lost. The next try checks first.
                self.ambiguous = true;
                Err(AttemptError::Transient(e))
            }
            Err(e) => Err(AttemptError::Fatal(e)),
        }
    }

    /// Gives the leases of a batch that will not be sent as encoded back to
    /// those waiting to ride, ahead of them: they ride in the next request,
    /// or are served alone after the batch.
    pub(super) fn unready(&mut self, ready: Option<Ready>) {
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
    ) -> Result<Option<Ready>, DbError> {
        if writes.is_empty() && self.riding.is_empty() {
            return Ok(None);
        }
        let ops = ops_of(items, &writes);
        let sizes: Vec<_> = self.riding.iter().map(|r| (r.table, r.size)).collect();
        let batch = self.exec.prepare_remote(&ops, multi, &sizes)?;
        Ok(Some(Ready {
            batch,
            writes,
            leases: std::mem::take(&mut self.riding),
            multi,
        }))
    }

    /// Whether the server applied the batch whose reply was lost; asked no
    /// longer than the close deadline allows.
    async fn batch_was_applied(&mut self, ops: &[&Op]) -> Result<bool, AttemptError> {
        let applied = self
            .before_close(self.exec.remote_batch_applied(ops))
            .await??;
        self.ambiguous = false;
        if applied == Some(true) {
            tracing::warn!(target: "trace_writer", ops = ops.len(),
                "the server had committed a batch whose reply was lost; not sending it again");
        }
        Ok(applied == Some(true))
    }

    /// Runs `f`, cut short at the close deadline if one runs.
    async fn before_close<F: Future>(&self, f: F) -> Result<F::Output, DbError> {
        match self.shared.until_close_deadline() {
            Some(left) => tokio::time::timeout(left, f)
                .await
                .map_err(|_| past_deadline()),
            None => Ok(f.await),
        }
    }

    /// Takes the messages that make the next batch while `flight` is in
    /// flight: up to the batch bounds, stopping after a message that needs a
    /// commit first, and once the queue is empty after the reply came, a
    /// read was taken, or the close deadline passed. Leases and step loads
    /// are served meanwhile.
    async fn collect_during(&mut self, flight: &mut Flight) -> (Vec<Item>, Option<Terminator>) {
        let mut g = Gathering::default();
        loop {
            if g.items.len() % 256 == 255 {
                self.serve_control(true).await;
            }
            let msg = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    if g.has_read || flight.landed() || self.shared.past_close_deadline() {
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
    async fn wait_during(&mut self, flight: &Flight) -> Woke {
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
