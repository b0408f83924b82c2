//! `end_session(true)` under `auto_save == false`: the kept writes, made
//! in the order they were recorded.

use crate::error::Result;
use crate::tracer::recorded::{HistorySlot, RecordedSession};
use crate::tracer::state::{bare_step, metadata_value, Open, Pending};
use crate::tracer::SessionTracer;

impl SessionTracer {
    /// Writes what `auto_save == false` kept, then the session's counts. On
    /// an error, the writes already made are dropped from the log (steps
    /// stay: they are idempotent), so a retried `end_session` does not write
    /// them twice.
    pub(super) async fn save_pending(&self, open: &mut Open) -> Result<()> {
        let pending = std::mem::take(&mut open.pending);
        let (done, result) = self.write_pending(&open.recorded, &pending).await;
        if result.is_err() {
            open.pending = pending
                .into_iter()
                .enumerate()
                .filter(|(i, p)| *i >= done || p.idempotent())
                .map(|(_, p)| p)
                .collect();
        }
        result
    }

    /// Writes `pending` in order; returns how many were written, and the
    /// first error.
    async fn write_pending(
        &self,
        recorded: &RecordedSession,
        pending: &[Pending],
    ) -> (usize, Result<()>) {
        let trace = &recorded.trace;
        let sid = trace.session_id.as_str();
        let s = &self.storage;
        let meta = metadata_value(&trace.metadata);
        if let Err(e) = s.ensure_session(sid, trace.created_at, &meta).await {
            return (0, Err(e));
        }
        let mut step_ids: Vec<Option<i64>> = vec![None; trace.session_time_steps.len()];
        let step_of = |ids: &[Option<i64>], slot: HistorySlot| match slot {
            HistorySlot::Step { step, .. } => ids[step],
            HistorySlot::Loose(_) => None,
        };
        for (done, p) in pending.iter().enumerate() {
            let r = match p {
                Pending::Step(pos) => {
                    let step = bare_step(&trace.session_time_steps[*pos]);
                    s.ensure_timestep(sid, &step)
                        .await
                        .map(|id| step_ids[*pos] = Some(id))
                }
                Pending::Event(slot) => {
                    let ts = step_of(&step_ids, *slot);
                    s.insert_event(sid, ts, recorded.event(*slot))
                        .await
                        .map(drop)
                }
                Pending::Message(slot) => {
                    let ts = step_of(&step_ids, *slot);
                    let msg = recorded.message(*slot);
                    s.insert_message(sid, ts, msg).await.map(drop)
                }
                Pending::EndStep(pos) => {
                    let step = &trace.session_time_steps[*pos];
                    s.update_timestep(sid, &step.step_id, step.completed_at)
                        .await
                }
                Pending::Outcome(r) => s.insert_outcome_reward(sid, r).await.map(drop),
                Pending::EventReward {
                    event_id,
                    message_id,
                    turn,
                    reward,
                } => s
                    .insert_event_reward(sid, *event_id, *message_id, *turn, reward)
                    .await
                    .map(drop),
            };
            if let Err(e) = r {
                return (done, Err(e));
            }
        }
        (pending.len(), s.update_session_counts(sid).await)
    }
}
