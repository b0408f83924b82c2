//! The control channel: id leases and step loads, which do not wait their
//! turn in the queue.

use crate::error::{DbError, ErrorClass, TracingError, BUG};
use crate::writer::actor::Actor;
use crate::writer::protocol::{Control, LeaseRequest};
use crate::writer::stats::Counters;

impl Actor {
    /// Serves what waits on the control channel. With `leases` false (the
    /// database is locked), leases are kept for later and only step loads,
    /// which only read, are answered.
    pub(super) async fn serve_control(&mut self, leases: bool) {
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
    pub(super) async fn answer_step_loads(&mut self) {
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

    pub(super) async fn control(&mut self, c: Control, leases: bool) {
        match c {
            Control::Lease(req) => match self.pipeline.as_mut() {
                // Carried by the next request rather than sent alone.
                Some(p) if self.in_batch => p.carry(req),
                _ if leases => self.lease(req).await,
                _ => self.deferred_leases.push(req),
            },
            // `linger` looks at the queue after any control message.
            Control::Wake => {}
            #[cfg(feature = "fault-injection")]
            Control::Crash => panic!("fault injection: the actor was told to crash"),
            #[cfg(feature = "fault-injection")]
            Control::CrashWhenEncodingBehind => self.crash_when_encoding_behind = true,
            // Answered together by `answer_step_loads`.
            Control::LoadSteps { session_id, reply } => {
                self.pending_loads.push((session_id, reply))
            }
        }
    }

    pub(super) async fn lease(&mut self, req: LeaseRequest) {
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
                    let e = DbError::new(ErrorClass::Fatal, BUG);
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
}
