//! [`RecordedSession`]: a session as the tracer recorded it, each record
//! kept once, with the histories as positions into the steps.

use crate::models::{MarkovBlanketMessage, SessionTrace, TracingEvent};

/// Where one entry of a session's event or message history is kept in a
/// [`RecordedSession`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistorySlot {
    /// The `index`-th event (or message) of `session_time_steps[step]`.
    Step {
        /// The step's position in `session_time_steps`.
        step: usize,
        /// The record's position in the step.
        index: usize,
    },
    /// The `index`-th event (or message) recorded outside any timestep.
    Loose(usize),
}

/// A session as a [`SessionTracer`](crate::SessionTracer) kept it: each
/// event and message is held once, in its step or among those recorded
/// outside any step, and the histories are lists of [`HistorySlot`]s in call
/// order.
///
/// [`RecordedSession::into_trace`] turns it into the [`SessionTrace`] that
/// [`SessionTracer::end_session`](crate::SessionTracer::end_session)
/// returns. A caller that converts the trace into another form (the Python
/// bindings build dicts) can convert each record once and share it between
/// its step and the history.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::{collections::HashMap, sync::Arc};
/// use trace_writer::*;
///
/// let tracer = SessionTracer::new(Arc::new(LibsqlTraceStorage::new_memory().await?));
/// tracer.start_session(Some("s"), HashMap::new()).await?;
/// tracer.record_message(MessageContent::from_text("hi"), "user", HashMap::new()).await?;
/// tracer.start_timestep("step-0", Some(0), HashMap::new()).await?;
/// tracer.record_message(MessageContent::from_text("ok"), "assistant", HashMap::new()).await?;
/// let recorded = tracer.end_session_recorded(true).await?;
/// use trace_writer::tracer::HistorySlot;
/// assert_eq!(
///     recorded.message_order,
///     [HistorySlot::Loose(0), HistorySlot::Step { step: 0, index: 0 }]
/// );
/// assert_eq!(recorded.message(recorded.message_order[1]).message_type, "assistant");
/// let trace = recorded.into_trace();
/// assert_eq!(trace.markov_blanket_message_history.len(), 2);
/// # Ok::<(), TracingError>(()) }).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedSession {
    /// The session with its steps, their events and messages; its two
    /// histories are empty (see `event_order` and `message_order`).
    pub trace: SessionTrace,
    /// The events recorded outside any timestep, in call order.
    pub loose_events: Vec<TracingEvent>,
    /// The messages recorded outside any timestep, in call order.
    pub loose_messages: Vec<MarkovBlanketMessage>,
    /// The event history: where each event is kept, in call order.
    pub event_order: Vec<HistorySlot>,
    /// The message history: where each message is kept, in call order.
    pub message_order: Vec<HistorySlot>,
}

impl RecordedSession {
    pub(super) fn new(trace: SessionTrace) -> Self {
        Self {
            trace,
            loose_events: Vec::new(),
            loose_messages: Vec::new(),
            event_order: Vec::new(),
            message_order: Vec::new(),
        }
    }

    /// The event kept at `slot`.
    ///
    /// # Panics
    /// If `slot` is not one of this session's (not from `event_order`).
    pub fn event(&self, slot: HistorySlot) -> &TracingEvent {
        match slot {
            HistorySlot::Step { step, index } => &self.trace.session_time_steps[step].events[index],
            HistorySlot::Loose(i) => &self.loose_events[i],
        }
    }

    /// The message kept at `slot`.
    ///
    /// # Panics
    /// If `slot` is not one of this session's (not from `message_order`).
    pub fn message(&self, slot: HistorySlot) -> &MarkovBlanketMessage {
        match slot {
            HistorySlot::Step { step, index } => {
                &self.trace.session_time_steps[step].markov_blanket_messages[index]
            }
            HistorySlot::Loose(i) => &self.loose_messages[i],
        }
    }

    /// The trace with both histories filled in call order (each record kept
    /// in a step is cloned into its history).
    pub fn into_trace(self) -> SessionTrace {
        let events = self.event_order.iter().map(|s| self.event(*s).clone());
        let events: Vec<TracingEvent> = events.collect();
        let messages = self.message_order.iter().map(|s| self.message(*s).clone());
        let messages: Vec<MarkovBlanketMessage> = messages.collect();
        let mut trace = self.trace;
        trace.event_history = events;
        trace.markov_blanket_message_history = messages;
        trace
    }
}
