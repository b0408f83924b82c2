//! [`SessionTracer`]: the high-level recording API of the original module.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::{Result, TracingError};
use crate::models::{
    EventReward, MarkovBlanketMessage, MessageContent, OutcomeReward, SessionTimeStep,
    SessionTrace, TimeRecord, TracingEvent,
};
use crate::storage::TraceStorage;

/// Records one session at a time over any [`TraceStorage`].
///
/// Every call writes through to the storage at once, so a crash loses
/// nothing the storage had accepted. The tracer also keeps the session in
/// memory, which [`SessionTracer::end_session`] returns.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::{collections::HashMap, sync::Arc};
/// use trace_writer::*;
///
/// let storage = Arc::new(LibsqlTraceStorage::new_memory().await?);
/// let tracer = SessionTracer::new(storage.clone());
/// let id = tracer.start_session(None, HashMap::new()).await?;
/// tracer.start_timestep("step-0", Some(0), HashMap::new()).await?;
/// let event = TracingEvent::Environment(EnvironmentEvent {
///     base: BaseEventFields::new("env"),
///     reward: 1.0,
///     ..Default::default()
/// });
/// let event_id = tracer.record_event(event).await?.unwrap();
/// tracer.record_event_reward(event_id, EventReward { reward_value: 1.0, ..Default::default() }).await?;
/// let trace = tracer.end_session(true).await?;
/// assert_eq!(trace.num_events(), 1);
/// assert_eq!(storage.get_session(&id).await?.unwrap(), trace);
/// # Ok::<(), TracingError>(()) }).unwrap();
/// ```
pub struct SessionTracer {
    storage: Arc<dyn TraceStorage>,
    /// A tokio mutex: it is held across storage calls so that one tracer's
    /// operations reach the storage in the order they were made.
    state: Mutex<TracerState>,
}

impl std::fmt::Debug for SessionTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTracer").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct TracerState {
    session: Option<SessionTrace>,
    /// Index into `session_time_steps` and the database id of the open step.
    step: Option<(usize, i64)>,
}

impl TracerState {
    fn session(&mut self) -> Result<&mut SessionTrace> {
        self.session.as_mut().ok_or(TracingError::NoActiveSession)
    }
}

impl SessionTracer {
    /// A tracer that writes to `storage`.
    pub fn new(storage: Arc<dyn TraceStorage>) -> Self {
        Self {
            storage,
            state: Mutex::new(TracerState::default()),
        }
    }

    /// The storage it writes to.
    pub fn storage(&self) -> &Arc<dyn TraceStorage> {
        &self.storage
    }

    /// The id of the open session, if any.
    pub async fn current_session_id(&self) -> Option<String> {
        self.state
            .lock()
            .await
            .session
            .as_ref()
            .map(|s| s.session_id.clone())
    }

    /// Starts a session and returns its id: `session_id`, or a new UUID.
    ///
    /// # Errors
    /// `SessionAlreadyActive` if a session is open; the storage's errors.
    pub async fn start_session(
        &self,
        session_id: Option<&str>,
        metadata: HashMap<String, Value>,
    ) -> Result<String> {
        let mut state = self.state.lock().await;
        if let Some(open) = &state.session {
            return Err(TracingError::SessionAlreadyActive(open.session_id.clone()));
        }
        let id = session_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let mut trace = SessionTrace::new(id.clone());
        let meta = Value::Object(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        self.storage
            .ensure_session(&id, trace.created_at, &meta)
            .await?;
        trace.metadata = metadata;
        state.session = Some(trace);
        state.step = None;
        Ok(id)
    }

    /// Starts a timestep, ending the previous one.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn start_timestep(
        &self,
        step_id: &str,
        turn_number: Option<i32>,
        metadata: HashMap<String, Value>,
    ) -> Result<()> {
        let mut state = self.state.lock().await;
        state.session()?;
        if state.step.is_some() {
            self.end_step(&mut state).await?;
        }
        let session = state.session()?;
        let mut step = SessionTimeStep::new(step_id, session.session_time_steps.len() as i32);
        step.turn_number = turn_number;
        step.step_metadata = metadata;
        let db_id = self
            .storage
            .ensure_timestep(&session.session_id, &step)
            .await?;
        session.session_time_steps.push(step);
        let pos = session.session_time_steps.len() - 1;
        state.step = Some((pos, db_id));
        Ok(())
    }

    /// Records an event in the open session, inside the open timestep if
    /// there is one, and returns its id.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_event(&self, event: TracingEvent) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let step = state.step;
        let session = state.session()?;
        let id = self
            .storage
            .insert_event(&session.session_id, step.map(|s| s.1), &event)
            .await?;
        if let Some((pos, _)) = step {
            session.session_time_steps[pos].events.push(event.clone());
        }
        session.event_history.push(event);
        Ok(Some(id))
    }

    /// Records a message in the open session, inside the open timestep if
    /// there is one, and returns its id.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_message(
        &self,
        content: MessageContent,
        message_type: &str,
        metadata: HashMap<String, Value>,
    ) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let step = state.step;
        let session = state.session()?;
        let msg = MarkovBlanketMessage {
            content,
            message_type: message_type.to_string(),
            time_record: TimeRecord::now(),
            metadata,
        };
        let id = self
            .storage
            .insert_message(&session.session_id, step.map(|s| s.1), &msg)
            .await?;
        if let Some((pos, _)) = step {
            session.session_time_steps[pos]
                .markov_blanket_messages
                .push(msg.clone());
        }
        session.markov_blanket_message_history.push(msg);
        Ok(Some(id))
    }

    /// Records the session's outcome reward and returns its id.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_outcome_reward(&self, reward: OutcomeReward) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let session = state.session()?;
        let id = self
            .storage
            .insert_outcome_reward(&session.session_id, &reward)
            .await?;
        Ok(Some(id))
    }

    /// Records a reward for the event `event_id`, with the open step's turn
    /// number, and returns its id.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_event_reward(
        &self,
        event_id: i64,
        reward: EventReward,
    ) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let turn = state
            .step
            .and_then(|(pos, _)| {
                state
                    .session
                    .as_ref()
                    .map(|s| s.session_time_steps[pos].turn_number)
            })
            .flatten();
        let session = state.session()?;
        let id = self
            .storage
            .insert_event_reward(&session.session_id, event_id, None, turn, &reward)
            .await?;
        Ok(Some(id))
    }

    /// Ends the open timestep.
    ///
    /// # Errors
    /// `NoActiveSession`, `NoActiveTimestep`; the storage's errors.
    pub async fn end_timestep(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        state.session()?;
        self.end_step(&mut state).await
    }

    async fn end_step(&self, state: &mut TracerState) -> Result<()> {
        let (pos, _) = state.step.ok_or(TracingError::NoActiveTimestep)?;
        let session = state.session()?;
        let now = Utc::now();
        let step = &mut session.session_time_steps[pos];
        self.storage
            .update_timestep(&session.session_id, &step.step_id, Some(now))
            .await?;
        step.completed_at = Some(now);
        state.step = None;
        Ok(())
    }

    /// Ends the session, ending its open timestep, and returns the trace.
    /// With `save`, the stored counts are recomputed so the session row is
    /// final; every event and message was already written as it came.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors. The session stays open on an
    /// error, so the call can be repeated.
    pub async fn end_session(&self, save: bool) -> Result<SessionTrace> {
        let mut state = self.state.lock().await;
        state.session()?;
        if state.step.is_some() {
            self.end_step(&mut state).await?;
        }
        let session_id = state.session()?.session_id.clone();
        if save {
            self.storage.update_session_counts(&session_id).await?;
        }
        state.session.take().ok_or(TracingError::NoActiveSession)
    }
}
