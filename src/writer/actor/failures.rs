//! What went wrong, kept and told: operations the database refused (the
//! dead-letter file), batches that could not be committed (the spill file),
//! the fatal error that halts the writer, and what a flush reports.

use crate::db::Op;
use crate::error::{DbError, TracingError};
use crate::writer::actor::Actor;
use crate::writer::lock;
use crate::writer::stats::Counters;

/// At most this many distinct causes are remembered between flushes (see
/// `Actor::noted`); past it the set starts afresh.
const NOTED_CAUSES: usize = 256;

impl Actor {
    /// An operation the database refused: counted, its cause logged and
    /// kept once, and the operation itself kept for the dead-letter file.
    pub(super) fn record_failure(&mut self, op: Op, err: &dyn std::fmt::Display) {
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
    pub(super) fn keep_refused(&mut self) {
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
    pub(super) fn note(&mut self, cause: &str) -> bool {
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
    pub(super) fn remember(&self, text: String) {
        self.shared.remember(text, self.config.error_history);
    }

    /// What a flush answers: `Halted` or `Spilled` while writes are being
    /// spilled (nothing queued before the flush committed), else
    /// `WriteFailed` if the database refused operations since the last
    /// flush, naming the dead-letter file that keeps them.
    pub(super) fn take_failures(&mut self) -> Result<(), TracingError> {
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
    pub(super) fn spilled_error(&self) -> Option<TracingError> {
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
    pub(super) fn halt(&mut self, err: &DbError) {
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

    /// `Halted` if a fatal error halted the writer.
    pub(super) fn halt_error(&self) -> Option<TracingError> {
        self.halt.as_ref().and_then(|_| self.spilled_error())
    }

    /// Keeps operations that could not be committed in the spill file. If
    /// even that fails, they go to the dead-letter file with both causes.
    pub(super) fn spill(&mut self, mut ops: Vec<Op>, cause: &str) {
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
