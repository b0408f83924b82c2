//! The tracer's state: the open session, its open step, and the writes
//! that `auto_save == false` keeps for `end_session(true)`.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Result, TracingError};
use crate::models::{EventReward, OutcomeReward, SessionTimeStep};
use crate::tracer::recorded::{HistorySlot, RecordedSession};

/// The open timestep.
#[derive(Clone, Copy)]
pub(super) struct OpenStep {
    /// Its position in `session_time_steps`.
    pub(super) pos: usize,
    /// Its database id (with `auto_save`).
    pub(super) db_id: Option<i64>,
}

/// A write kept for `end_session(true)` under `auto_save == false`, in the
/// order it was made, so the ids come out as with `auto_save`.
pub(super) enum Pending {
    Step(usize),
    Event(HistorySlot),
    Message(HistorySlot),
    EndStep(usize),
    Outcome(OutcomeReward),
    EventReward {
        event_id: i64,
        message_id: Option<i64>,
        turn: Option<i32>,
        reward: EventReward,
    },
}

impl Pending {
    /// Whether writing it twice does no harm.
    pub(super) fn idempotent(&self) -> bool {
        matches!(self, Pending::Step(_) | Pending::EndStep(_))
    }
}

/// The open session.
pub(super) struct Open {
    pub(super) recorded: RecordedSession,
    pub(super) step: Option<OpenStep>,
    /// The writes `auto_save == false` keeps for `end_session(true)`.
    pub(super) pending: Vec<Pending>,
}

impl Open {
    pub(super) fn session_id(&self) -> &str {
        &self.recorded.trace.session_id
    }
}

#[derive(Default)]
pub(super) struct TracerState {
    pub(super) open: Option<Open>,
}

impl TracerState {
    pub(super) fn open(&mut self) -> Result<&mut Open> {
        self.open.as_mut().ok_or(TracingError::NoActiveSession)
    }
}

/// A copy of `step` without its records or completion time: what
/// `ensure_timestep` is given when the step starts.
pub(super) fn bare_step(step: &SessionTimeStep) -> SessionTimeStep {
    SessionTimeStep {
        step_id: step.step_id.clone(),
        step_index: step.step_index,
        timestamp: step.timestamp,
        turn_number: step.turn_number,
        events: Vec::new(),
        markov_blanket_messages: Vec::new(),
        step_metadata: step.step_metadata.clone(),
        completed_at: None,
    }
}

/// The session's metadata as the JSON object `ensure_session` takes.
pub(super) fn metadata_value(metadata: &HashMap<String, Value>) -> Value {
    Value::Object(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}
