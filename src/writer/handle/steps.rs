//! The writer's side of `ensure_timestep`: the step cache, and the loads of
//! a session's committed steps (asked for early by `ensure_session`).

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use crate::db::{Op, Table};
use crate::error::TracingError;
use crate::writer::actor::{Control, Msg};
use crate::writer::cache::{Lookup, Prefetch, StepsAnswer};
use crate::writer::handle::BufferedTraceWriter;
use crate::writer::lock;
use crate::writer::reserve::{check_size, reserve};
use crate::writer::stats::Counters;
use crate::writer::wait::bounded;

impl BufferedTraceWriter {
    /// Asks the actor for the committed steps of a session that was just
    /// ensured and is not cached, without waiting for the answer: the
    /// session's first `ensure_timestep` takes it, so the load overlaps
    /// whatever the rollout does in between instead of following it.
    ///
    /// It is the load that `ensure_timestep` would ask for, asked earlier:
    /// nothing of a session that is not cached is queued (see
    /// [`SessionCache`]), so its committed rows are the truth at either
    /// moment, and a load overtaken by a forgetting (an eviction, a delete,
    /// a failed step) is refused when installed, as any load is.
    pub(super) fn prefetch_steps(&self, session_id: &str) {
        if self.inner.config.provisional_step_ids {
            // Its first `ensure_timestep` will not wait for a load.
            return;
        }
        let done = self.done_count();
        let mut cache = lock(&self.inner.sessions);
        if !cache.wants_prefetch(session_id, done) {
            return;
        }
        let since = cache.epoch();
        if let Some(answer) = self.ask_steps(session_id) {
            let cap = self.inner.config.session_cache;
            cache.prefetching(session_id, Prefetch { since, answer }, cap);
        }
    }

    /// Files a session made up at random as one with no stored step, so that
    /// its `ensure_timestep` calls never wait for a load (see
    /// [`TraceStorage::ensure_new_session`](crate::TraceStorage::ensure_new_session)).
    /// Nothing of it can be queued or stored, so the empty set is its truth,
    /// as a load would have found; a session already here is left as it is.
    /// It takes its place in the cache now rather than at its first step,
    /// so with a `session_cache` smaller than the sessions begun at once, a
    /// session may be evicted before its first step and then be read.
    pub(super) fn steps_known_empty(&self, session_id: &str) {
        let done = self.done_count();
        let mut cache = lock(&self.inner.sessions);
        if cache.needs_fifo_load(session_id, done) {
            // Something of this id is queued after all: load it as usual.
            return;
        }
        let enqueued = self.inner.shared.counters.enqueued.load(Ordering::Acquire);
        let since = cache.epoch();
        let cap = self.inner.config.session_cache;
        cache.load(session_id, Vec::new(), cap, enqueued, done, since);
    }

    /// Asks the actor, on the control channel, for the committed steps of a
    /// session with nothing queued; `None` if the actor is gone.
    fn ask_steps(&self, session_id: &str) -> Option<StepsAnswer> {
        Counters::add(&self.inner.shared.counters.step_loads, 1);
        let (reply, answer) = oneshot::channel();
        let asked = self.inner.control_tx.send(Control::LoadSteps {
            session_id: session_id.to_string(),
            reply,
        });
        asked.ok().map(|()| answer)
    }

    /// Forgets the sessions whose step inserts failed (see
    /// `Shared::failed_steps`); their next load waits for what is queued.
    fn forget_failed_steps(&self) {
        let failed = std::mem::take(&mut *lock(&self.inner.shared.failed_steps));
        if failed.is_empty() {
            return;
        }
        let mut cache = lock(&self.inner.sessions);
        let enqueued = self.inner.shared.counters.enqueued.load(Ordering::Acquire);
        for session_id in failed {
            cache.invalidate(&session_id, enqueued, self.inner.config.session_cache);
        }
    }

    /// The writer's `ensure_timestep`: the step's id from the cache (its
    /// session's steps loaded first if they are not), or `op`, the step's
    /// insert, queued with a new id.
    pub(super) async fn ensure_step_cached(
        &self,
        mut op: Op,
        session_id: &str,
        step_id: &str,
    ) -> Result<i64, TracingError> {
        self.check_open()?;
        let bytes = check_size(&self.inner.config, &op)?;
        let cap = self.inner.config.session_cache;
        loop {
            self.forget_failed_steps();
            let found = lock(&self.inner.sessions).lookup(session_id, step_id);
            match found {
                Lookup::Found(id) => return Ok(id),
                Lookup::Unloaded => {
                    let done = self.done_count();
                    let (fifo, mut since, ahead) = {
                        let mut cache = lock(&self.inner.sessions);
                        let ahead = cache.take_prefetch(session_id);
                        (
                            cache.needs_fifo_load(session_id, done),
                            cache.epoch(),
                            ahead,
                        )
                    };
                    let limit = self.inner.config.enqueue_timeout;
                    let what = "loading the session's steps";
                    let steps = if !fifo && self.inner.config.provisional_step_ids {
                        // Nothing of this session is queued here, so only
                        // another process's rows could be missing from an
                        // empty set; a step insert that meets one files its
                        // records under it (see `WriterConfig::provisional_step_ids`).
                        Vec::new()
                    } else if let (false, Some(ahead)) = (fifo, ahead) {
                        // Asked for by `ensure_session`: usually answered
                        // already. A failed one is asked for again.
                        since = ahead.since;
                        match bounded(limit, what, ahead.answer).await? {
                            Ok(Ok(steps)) => steps,
                            Ok(Err(_)) | Err(_) => continue,
                        }
                    } else if fifo {
                        Counters::add(&self.inner.shared.counters.step_loads, 1);
                        self.request(limit, what, |reply| Msg::LoadSteps {
                            session_id: session_id.to_string(),
                            reply,
                        })
                        .await??
                    } else {
                        // Nothing of this session is queued: committed rows
                        // are the truth, and the load need not wait its turn.
                        self.check_open()?;
                        let answer = self
                            .ask_steps(session_id)
                            .ok_or_else(|| self.closed_error())?;
                        bounded(limit, what, answer)
                            .await?
                            .map_err(|_| self.closed_error())??
                    };
                    let mut cache = lock(&self.inner.sessions);
                    // Read under the cache lock, which every timestep insert
                    // holds across its send: the marker of a session evicted
                    // here covers all of its queued steps.
                    let enqueued = self.inner.shared.counters.enqueued.load(Ordering::Acquire);
                    // Refused if the session was forgotten meanwhile (a delete,
                    // a failed step): the loop loads it again.
                    cache.load(session_id, steps, cap, enqueued, self.done_count(), since);
                }
                Lookup::Missing => {
                    let res = reserve(&self.inner.shared, &self.inner.config, bytes).await?;
                    let id = self.alloc(Table::Timesteps).await?;
                    // The cache lock is held across the (non-blocking) send,
                    // so no producer can use this id before its row is queued.
                    let mut cache = lock(&self.inner.sessions);
                    match cache.lookup(session_id, step_id) {
                        // Another producer created it meanwhile; `id` is left
                        // unused.
                        Lookup::Found(existing) => return Ok(existing),
                        // Evicted meanwhile: load again.
                        Lookup::Unloaded => continue,
                        Lookup::Missing => {}
                    }
                    // Every path from here returns: the row is moved, not
                    // copied.
                    op.set_id(id);
                    self.send_write(op, bytes, res)?;
                    if let Some(steps) = cache.map.get_mut(session_id) {
                        steps.insert(step_id.to_string(), id);
                    }
                    return Ok(id);
                }
            }
        }
    }
}
