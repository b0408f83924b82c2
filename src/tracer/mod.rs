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

mod kind;
mod recorded;
mod save;
mod state;

use kind::RecordKind;
pub use recorded::{HistorySlot, RecordedSession};
use state::{metadata_value, Open, OpenStep, Pending, TracerState};

/// Records one session at a time over any [`TraceStorage`].
///
/// By default (`auto_save`, see [`SessionTracer::with_auto_save`]) every
/// call writes through to the storage at once, so a crash loses nothing the
/// storage had accepted, and `record_*` return the new row's id. The tracer
/// also keeps the session in memory, which [`SessionTracer::end_session`]
/// returns.
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
    /// Write each record as it is made (`true`), or keep the session in
    /// memory and write it all at `end_session(true)`.
    auto_save: bool,
    /// A tokio mutex: it is held across storage calls so that one tracer's
    /// operations reach the storage in the order they were made.
    state: Mutex<TracerState>,
}

impl std::fmt::Debug for SessionTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SessionTracer");
        d.field("auto_save", &self.auto_save)
            .finish_non_exhaustive()
    }
}

impl SessionTracer {
    /// A tracer that writes to `storage` as it records (`auto_save`).
    pub fn new(storage: Arc<dyn TraceStorage>) -> Self {
        Self::with_auto_save(storage, true)
    }

    /// A tracer over `storage` that writes each record as it is made
    /// (`auto_save == true`, as [`SessionTracer::new`]) or keeps the session
    /// in memory (`false`).
    ///
    /// Without `auto_save`, nothing reaches the storage until
    /// [`SessionTracer::end_session`]`(true)`, which writes the session,
    /// its steps, records and rewards in the order they were made (so the
    /// rows and their ids are those `auto_save` would have written), and
    /// `record_*` return `None`. `end_session(false)` writes nothing.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::{collections::HashMap, sync::Arc};
    /// use trace_writer::*;
    ///
    /// let storage = Arc::new(LibsqlTraceStorage::new_memory().await?);
    /// let tracer = SessionTracer::with_auto_save(storage.clone(), false);
    /// assert!(!tracer.auto_save());
    /// tracer.start_session(Some("s"), HashMap::new()).await?;
    /// let event = TracingEvent::Runtime(RuntimeEvent {
    ///     base: BaseEventFields::new("agent"),
    ///     actions: vec![1],
    /// });
    /// assert_eq!(tracer.record_event(event).await?, None);
    /// assert_eq!(storage.get_session("s").await?, None);
    /// let trace = tracer.end_session(true).await?;
    /// assert_eq!(storage.get_session("s").await?.unwrap(), trace);
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub fn with_auto_save(storage: Arc<dyn TraceStorage>, auto_save: bool) -> Self {
        Self {
            storage,
            auto_save,
            state: Mutex::new(TracerState::default()),
        }
    }

    /// The storage it writes to.
    pub fn storage(&self) -> &Arc<dyn TraceStorage> {
        &self.storage
    }

    /// Whether each record is written as it is made (see
    /// [`SessionTracer::with_auto_save`]).
    pub fn auto_save(&self) -> bool {
        self.auto_save
    }

    /// The id of the open session, if any.
    ///
    /// # Cancel safety
    /// Cancel safe. It waits only for a call of this tracer in progress.
    pub async fn current_session_id(&self) -> Option<String> {
        let state = self.state.lock().await;
        state.open.as_ref().map(|o| o.session_id().to_string())
    }

    /// The open session's id and the open timestep's position among its
    /// steps (its `step_index`), or `None` when no timestep is open.
    ///
    /// A caller that started a step can tell with it whether that step is
    /// still the open one.
    ///
    /// # Cancel safety
    /// Cancel safe. It waits only for a call of this tracer in progress.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::{collections::HashMap, sync::Arc};
    /// use trace_writer::*;
    ///
    /// let tracer = SessionTracer::new(Arc::new(LibsqlTraceStorage::new_memory().await?));
    /// tracer.start_session(Some("s"), HashMap::new()).await?;
    /// assert_eq!(tracer.current_timestep().await, None);
    /// tracer.start_timestep("a", None, HashMap::new()).await?;
    /// tracer.start_timestep("b", None, HashMap::new()).await?;
    /// assert_eq!(tracer.current_timestep().await, Some(("s".to_string(), 1)));
    /// tracer.end_timestep().await?;
    /// assert_eq!(tracer.current_timestep().await, None);
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub async fn current_timestep(&self) -> Option<(String, usize)> {
        let state = self.state.lock().await;
        let open = state.open.as_ref()?;
        open.step.map(|s| (open.session_id().to_string(), s.pos))
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
        if let Some(open) = &state.open {
            return Err(TracingError::SessionAlreadyActive(
                open.session_id().to_string(),
            ));
        }
        let id = session_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let mut trace = SessionTrace::new(id.clone());
        if self.auto_save {
            let meta = metadata_value(&metadata);
            if session_id.is_none() {
                // Made up here at random: no step of it can be stored.
                self.storage
                    .ensure_new_session(&id, trace.created_at, &meta)
                    .await?;
            } else {
                self.storage
                    .ensure_session(&id, trace.created_at, &meta)
                    .await?;
            }
        }
        trace.metadata = metadata;
        state.open = Some(Open {
            recorded: RecordedSession::new(trace),
            step: None,
            pending: Vec::new(),
        });
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
        let open = state.open()?;
        if open.step.is_some() {
            self.end_step(open).await?;
        }
        let steps = &open.recorded.trace.session_time_steps;
        let mut step = SessionTimeStep::new(step_id, steps.len() as i32);
        step.turn_number = turn_number;
        step.step_metadata = metadata;
        let db_id = if self.auto_save {
            let id = self.storage.ensure_timestep(open.session_id(), &step);
            Some(id.await?)
        } else {
            None
        };
        let steps = &mut open.recorded.trace.session_time_steps;
        steps.push(step);
        let pos = steps.len() - 1;
        if !self.auto_save {
            open.pending.push(Pending::Step(pos));
        }
        open.step = Some(OpenStep { pos, db_id });
        Ok(())
    }

    /// Records an event in the open session, inside the open timestep if
    /// there is one, and returns its id (`None` without `auto_save`).
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_event(&self, event: TracingEvent) -> Result<Option<i64>> {
        self.record(event).await
    }

    /// Records a message in the open session, inside the open timestep if
    /// there is one, and returns its id (`None` without `auto_save`). Its
    /// time is now; [`SessionTracer::record_markov_message`] takes a whole
    /// message.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_message(
        &self,
        content: MessageContent,
        message_type: &str,
        metadata: HashMap<String, Value>,
    ) -> Result<Option<i64>> {
        let msg = MarkovBlanketMessage {
            content,
            message_type: message_type.to_string(),
            time_record: TimeRecord::now(),
            metadata,
        };
        self.record_markov_message(msg).await
    }

    /// Records a whole message, its `time_record` kept as given, in the open
    /// session (inside the open timestep if there is one), and returns its id
    /// (`None` without `auto_save`).
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::{collections::HashMap, sync::Arc};
    /// use trace_writer::*;
    ///
    /// let storage = Arc::new(LibsqlTraceStorage::new_memory().await?);
    /// let tracer = SessionTracer::new(storage.clone());
    /// tracer.start_session(Some("s"), HashMap::new()).await?;
    /// let time_record = TimeRecord { event_time: 1.5, message_time: Some(3) };
    /// let msg = MarkovBlanketMessage {
    ///     content: MessageContent::from_text("hi"),
    ///     message_type: "user".into(),
    ///     time_record: time_record.clone(),
    ///     metadata: HashMap::new(),
    /// };
    /// assert_eq!(tracer.record_markov_message(msg).await?, Some(1));
    /// tracer.end_session(true).await?;
    /// let back = storage.get_session("s").await?.unwrap();
    /// assert_eq!(back.markov_blanket_message_history[0].time_record, time_record);
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub async fn record_markov_message(&self, msg: MarkovBlanketMessage) -> Result<Option<i64>> {
        self.record(msg).await
    }

    /// Records an event or a message in the open session, inside the open
    /// timestep if there is one: written at once with `auto_save` (its id
    /// returned), else kept for `end_session(true)`.
    #[inline]
    async fn record<R: RecordKind>(&self, record: R) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let open = state.open()?;
        let id = if self.auto_save {
            let ts = open.step.and_then(|s| s.db_id);
            let id = record.write(&*self.storage, open.session_id(), ts);
            Some(id.await?)
        } else {
            None
        };
        let slot = record.keep(&mut open.recorded, open.step.map(|s| s.pos));
        if !self.auto_save {
            open.pending.push(R::pending(slot));
        }
        Ok(id)
    }

    /// Records the session's outcome reward and returns its id (`None`
    /// without `auto_save`).
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_outcome_reward(&self, reward: OutcomeReward) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let open = state.open()?;
        if !self.auto_save {
            open.pending.push(Pending::Outcome(reward));
            return Ok(None);
        }
        let id = self
            .storage
            .insert_outcome_reward(open.session_id(), &reward)
            .await?;
        Ok(Some(id))
    }

    /// Records a reward for the event `event_id`, with the open step's turn
    /// number, and returns its id (`None` without `auto_save`).
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    pub async fn record_event_reward(
        &self,
        event_id: i64,
        reward: EventReward,
    ) -> Result<Option<i64>> {
        self.record_event_reward_for(event_id, reward, None, None)
            .await
    }

    /// Records a reward for the event `event_id`, tied to the message
    /// `message_id` if given, and returns its id (`None` without
    /// `auto_save`). `turn_number == None` takes the open timestep's turn
    /// number, or NULL when no timestep is open.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::{collections::HashMap, sync::Arc};
    /// use trace_writer::*;
    ///
    /// let storage = Arc::new(LibsqlTraceStorage::new_memory().await?);
    /// let tracer = SessionTracer::new(storage.clone());
    /// tracer.start_session(Some("s"), HashMap::new()).await?;
    /// tracer.start_timestep("step-0", Some(4), HashMap::new()).await?;
    /// let event = TracingEvent::Runtime(RuntimeEvent {
    ///     base: BaseEventFields::new("agent"),
    ///     actions: vec![1],
    /// });
    /// let event_id = tracer.record_event(event).await?.unwrap();
    /// let reward = EventReward { reward_value: 1.0, ..Default::default() };
    /// tracer.record_event_reward_for(event_id, reward.clone(), None, None).await?;
    /// tracer.record_event_reward_for(event_id, reward, None, Some(9)).await?;
    /// tracer.end_session(true).await?;
    /// let rows = storage
    ///     .query("SELECT turn_number FROM event_rewards ORDER BY id", vec![])
    ///     .await?;
    /// assert_eq!(rows[0]["turn_number"], 4);
    /// assert_eq!(rows[1]["turn_number"], 9);
    /// # Ok::<(), TracingError>(()) }).unwrap();
    /// ```
    pub async fn record_event_reward_for(
        &self,
        event_id: i64,
        reward: EventReward,
        message_id: Option<i64>,
        turn_number: Option<i32>,
    ) -> Result<Option<i64>> {
        let mut state = self.state.lock().await;
        let open = state.open()?;
        let steps = &open.recorded.trace.session_time_steps;
        let turn = turn_number.or_else(|| open.step.and_then(|s| steps[s.pos].turn_number));
        if !self.auto_save {
            open.pending.push(Pending::EventReward {
                event_id,
                message_id,
                turn,
                reward,
            });
            return Ok(None);
        }
        let id = self
            .storage
            .insert_event_reward(open.session_id(), event_id, message_id, turn, &reward)
            .await?;
        Ok(Some(id))
    }

    /// Ends the open timestep.
    ///
    /// # Errors
    /// `NoActiveSession`, `NoActiveTimestep`; the storage's errors.
    pub async fn end_timestep(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        let open = state.open()?;
        self.end_step(open).await
    }

    async fn end_step(&self, open: &mut Open) -> Result<()> {
        let current = open.step.ok_or(TracingError::NoActiveTimestep)?;
        let now = Utc::now();
        let trace = &mut open.recorded.trace;
        let step = &mut trace.session_time_steps[current.pos];
        if self.auto_save {
            self.storage
                .update_timestep(&trace.session_id, &step.step_id, Some(now))
                .await?;
        } else {
            open.pending.push(Pending::EndStep(current.pos));
        }
        step.completed_at = Some(now);
        open.step = None;
        Ok(())
    }

    /// Ends the session, ending its open timestep, and returns the trace.
    /// With `save`, the stored counts are recomputed so the session row is
    /// final; with `auto_save` every event and message was already written
    /// as it came, without it they are all written now.
    ///
    /// # Errors
    /// `NoActiveSession`; the storage's errors. The session stays open on an
    /// error, so the call can be repeated: without `auto_save`, the writes
    /// that succeeded are not made again (except the idempotent steps).
    pub async fn end_session(&self, save: bool) -> Result<SessionTrace> {
        Ok(self.end_session_recorded(save).await?.into_trace())
    }

    /// [`SessionTracer::end_session`], returning the session as the tracer
    /// kept it: each record once, the histories as [`HistorySlot`]s.
    ///
    /// # Errors
    /// As [`SessionTracer::end_session`].
    pub async fn end_session_recorded(&self, save: bool) -> Result<RecordedSession> {
        let mut state = self.state.lock().await;
        let open = state.open()?;
        if open.step.is_some() {
            self.end_step(open).await?;
        }
        if save {
            if self.auto_save {
                self.storage
                    .update_session_counts(open.session_id())
                    .await?;
            } else {
                self.save_pending(open).await?;
            }
        }
        let done = state.open.take().ok_or(TracingError::NoActiveSession)?;
        Ok(done.recorded)
    }
}
