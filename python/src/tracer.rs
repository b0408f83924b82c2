//! `SessionTracer`: the original module's recording API, over either class.
//!
//! It follows the crate's `SessionTracer` call for call (same storage calls
//! in the same order, same step numbering and completion times), and adds
//! what the Python contract asks beyond it: `auto_save=False`, messages as
//! whole dicts (their `time_record` kept), and `message_id`/`turn_number`
//! on event rewards. The state is a plain mutex, taken with the GIL released
//! and held across the storage call, so one tracer's calls reach the
//! storage in the order they were made.

use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;
use trace_writer::{
    EventReward, MarkovBlanketMessage, OutcomeReward, SessionTimeStep, SessionTrace, TracingError,
    TracingEvent,
};

use crate::convert;
use crate::errors::{chain_to, err};
use crate::options;
use crate::storage::{aexit, exit, open_plain, open_writer, Backend, Storage, Target};

type R<T> = Result<T, TracingError>;

/// The open timestep.
#[derive(Clone, Copy)]
struct OpenStep {
    /// Its index in `session_time_steps`.
    pos: usize,
    /// Its database id (with `auto_save`).
    db_id: Option<i64>,
}

/// Where an event or message of the session is kept: in a step, or among
/// those recorded outside any step. Each is kept once; the histories are
/// these slots in call order, so a record is never cloned, and the trace
/// returned by `end_session` holds each event dict once (the histories
/// share the steps' dicts).
#[derive(Clone, Copy)]
enum Slot {
    Step(usize, usize),
    Loose(usize),
}

/// A write kept for `end_session(save=True)` under `auto_save=False`, in
/// the order it was made, so the ids come out as with `auto_save=True`.
enum Pending {
    Step(usize),
    Event(Slot),
    Message(Slot),
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
    fn idempotent(&self) -> bool {
        matches!(self, Pending::Step(_) | Pending::EndStep(_))
    }
}

/// The open session.
struct Open {
    /// The session, its steps with their events and messages; the two
    /// histories stay empty (see `event_order`).
    trace: SessionTrace,
    loose_events: Vec<TracingEvent>,
    loose_messages: Vec<MarkovBlanketMessage>,
    event_order: Vec<Slot>,
    message_order: Vec<Slot>,
    step: Option<OpenStep>,
    pending: Vec<Pending>,
}

impl Open {
    fn event(&self, slot: Slot) -> &TracingEvent {
        match slot {
            Slot::Step(p, i) => &self.trace.session_time_steps[p].events[i],
            Slot::Loose(i) => &self.loose_events[i],
        }
    }

    fn message(&self, slot: Slot) -> &MarkovBlanketMessage {
        match slot {
            Slot::Step(p, i) => &self.trace.session_time_steps[p].markov_blanket_messages[i],
            Slot::Loose(i) => &self.loose_messages[i],
        }
    }

    fn push_event(&mut self, event: TracingEvent) -> Slot {
        let slot = match self.step {
            Some(s) => {
                let events = &mut self.trace.session_time_steps[s.pos].events;
                events.push(event);
                Slot::Step(s.pos, events.len() - 1)
            }
            None => {
                self.loose_events.push(event);
                Slot::Loose(self.loose_events.len() - 1)
            }
        };
        self.event_order.push(slot);
        slot
    }

    fn push_message(&mut self, msg: MarkovBlanketMessage) -> Slot {
        let slot = match self.step {
            Some(s) => {
                let msgs = &mut self.trace.session_time_steps[s.pos].markov_blanket_messages;
                msgs.push(msg);
                Slot::Step(s.pos, msgs.len() - 1)
            }
            None => {
                self.loose_messages.push(msg);
                Slot::Loose(self.loose_messages.len() - 1)
            }
        };
        self.message_order.push(slot);
        slot
    }

    /// The trace as a dict, the histories sharing the steps' dicts.
    fn to_py(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let trace = convert::to_py(py, &self.trace)?;
        let d = trace.bind(py).cast::<PyDict>()?;
        let steps = d
            .get_item("session_time_steps")?
            .ok_or_else(|| err(TracingError::Internal("no session_time_steps".into())))?;
        let list = |slots: &[Slot], field: &str, loose: &dyn Fn(usize) -> PyResult<Py<PyAny>>| {
            let mut items = Vec::with_capacity(slots.len());
            for slot in slots {
                items.push(match *slot {
                    Slot::Step(p, i) => steps.get_item(p)?.get_item(field)?.get_item(i)?.unbind(),
                    Slot::Loose(i) => loose(i)?,
                });
            }
            pyo3::types::PyList::new(py, items)
        };
        let events = list(&self.event_order, "events", &|i| {
            convert::to_py(py, &self.loose_events[i])
        })?;
        let messages = list(&self.message_order, "markov_blanket_messages", &|i| {
            convert::to_py(py, &self.loose_messages[i])
        })?;
        d.set_item("event_history", events)?;
        d.set_item("markov_blanket_message_history", messages)?;
        Ok(trace)
    }
}

#[derive(Default)]
struct State {
    open: Option<Open>,
}

impl State {
    fn open(&mut self) -> R<&mut Open> {
        self.open.as_mut().ok_or(TracingError::NoActiveSession)
    }
}

/// Records one session at a time over a ``LibsqlTraceStorage`` or a
/// ``BufferedTraceWriter``.
///
/// With ``auto_save=True`` (the default) every record is written through as
/// it is made and ``record_*`` return the new row's id; with
/// ``auto_save=False`` the trace is kept in memory, ``record_*`` return
/// ``None`` and ``end_session(save=True)`` writes it all at once.
///
/// >>> from trace_writer import SessionTracer
/// >>> with SessionTracer.buffered(":memory:") as tracer:
/// ...     with tracer.session(metadata={"env": "crafter"}) as sid:
/// ...         with tracer.timestep("step-0", turn_number=0):
/// ...             tracer.record_event({"event_type": "runtime", "system_instance_id": "agent",
/// ...                                  "time_record": {"event_time": 1.0}, "actions": [2]})
/// ...     len(tracer.get_session(sid)["event_history"])
/// 1
/// 1
#[pyclass(frozen, module = "trace_writer", name = "SessionTracer")]
pub(crate) struct Tracer {
    storage: Py<Storage>,
    backend: Backend,
    auto_save: bool,
    state: Mutex<State>,
}

impl Tracer {
    fn new(storage: &Bound<'_, Storage>, auto_save: bool) -> Self {
        Tracer {
            backend: storage.get().backend.clone(),
            storage: storage.clone().unbind(),
            auto_save,
            state: Mutex::new(State::default()),
        }
    }

    /// The state; a panic elsewhere cannot leave it half-updated in a way
    /// that matters more than the error it raised, so poison is ignored.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_session_inner(&self, session_id: Option<String>, metadata: Value) -> R<String> {
        let mut state = self.state();
        if let Some(open) = &state.open {
            return Err(TracingError::SessionAlreadyActive(
                open.trace.session_id.clone(),
            ));
        }
        let id = session_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut trace = SessionTrace::new(id.clone());
        if self.auto_save {
            self.backend
                .ensure_session(&id, trace.created_at, &metadata)?;
        }
        if let Value::Object(m) = metadata {
            trace.metadata = m.into_iter().collect();
        }
        state.open = Some(Open {
            trace,
            loose_events: Vec::new(),
            loose_messages: Vec::new(),
            event_order: Vec::new(),
            message_order: Vec::new(),
            step: None,
            pending: Vec::new(),
        });
        Ok(id)
    }

    fn end_step(&self, open: &mut Open) -> R<()> {
        let current = open.step.ok_or(TracingError::NoActiveTimestep)?;
        let now = Utc::now();
        let step = &mut open.trace.session_time_steps[current.pos];
        if self.auto_save {
            self.backend
                .update_timestep(&open.trace.session_id, &step.step_id, Some(now))?;
        } else {
            open.pending.push(Pending::EndStep(current.pos));
        }
        step.completed_at = Some(now);
        open.step = None;
        Ok(())
    }

    fn start_timestep_inner(
        &self,
        step_id: &str,
        turn_number: Option<i32>,
        metadata: std::collections::HashMap<String, Value>,
    ) -> R<()> {
        let mut state = self.state();
        let open = state.open()?;
        if open.step.is_some() {
            self.end_step(open)?;
        }
        let mut step = SessionTimeStep::new(step_id, open.trace.session_time_steps.len() as i32);
        step.turn_number = turn_number;
        step.step_metadata = metadata;
        let db_id = if self.auto_save {
            Some(
                self.backend
                    .ensure_timestep(&open.trace.session_id, &step)?,
            )
        } else {
            None
        };
        open.trace.session_time_steps.push(step);
        let pos = open.trace.session_time_steps.len() - 1;
        if !self.auto_save {
            open.pending.push(Pending::Step(pos));
        }
        open.step = Some(OpenStep { pos, db_id });
        Ok(())
    }

    fn end_timestep_inner(&self) -> R<()> {
        let mut state = self.state();
        let open = state.open()?;
        self.end_step(open)
    }

    fn record_event_inner(&self, event: TracingEvent) -> R<Option<i64>> {
        let mut state = self.state();
        let open = state.open()?;
        let id = if self.auto_save {
            let ts = open.step.and_then(|s| s.db_id);
            Some(
                self.backend
                    .insert_event(&open.trace.session_id, ts, &event)?,
            )
        } else {
            None
        };
        let slot = open.push_event(event);
        if !self.auto_save {
            open.pending.push(Pending::Event(slot));
        }
        Ok(id)
    }

    fn record_message_inner(&self, msg: MarkovBlanketMessage) -> R<Option<i64>> {
        let mut state = self.state();
        let open = state.open()?;
        let id = if self.auto_save {
            let ts = open.step.and_then(|s| s.db_id);
            Some(
                self.backend
                    .insert_message(&open.trace.session_id, ts, &msg)?,
            )
        } else {
            None
        };
        let slot = open.push_message(msg);
        if !self.auto_save {
            open.pending.push(Pending::Message(slot));
        }
        Ok(id)
    }

    fn record_outcome_reward_inner(&self, reward: OutcomeReward) -> R<Option<i64>> {
        let mut state = self.state();
        let open = state.open()?;
        if self.auto_save {
            let id = self
                .backend
                .insert_outcome_reward(&open.trace.session_id, &reward)?;
            return Ok(Some(id));
        }
        open.pending.push(Pending::Outcome(reward));
        Ok(None)
    }

    fn record_event_reward_inner(
        &self,
        event_id: i64,
        reward: EventReward,
        message_id: Option<i64>,
        turn_number: Option<i32>,
    ) -> R<Option<i64>> {
        let mut state = self.state();
        let open = state.open()?;
        // The open step's turn number, or NULL when no step is open.
        let turn = turn_number.or_else(|| {
            open.step
                .and_then(|s| open.trace.session_time_steps[s.pos].turn_number)
        });
        if self.auto_save {
            let id = self.backend.insert_event_reward(
                &open.trace.session_id,
                event_id,
                message_id,
                turn,
                &reward,
            )?;
            return Ok(Some(id));
        }
        open.pending.push(Pending::EventReward {
            event_id,
            message_id,
            turn,
            reward,
        });
        Ok(None)
    }

    /// Writes what `auto_save=False` kept. On an error, the writes already
    /// made are dropped from the log (steps stay: they are idempotent), so
    /// a retried `end_session` does not write them twice.
    fn save_pending(&self, open: &mut Open) -> R<()> {
        let pending = std::mem::take(&mut open.pending);
        let trace = &open.trace;
        let sid = trace.session_id.as_str();
        let mut step_ids: Vec<Option<i64>> = vec![None; trace.session_time_steps.len()];
        let step_id = |ids: &[Option<i64>], slot: Slot| match slot {
            Slot::Step(p, _) => ids[p],
            Slot::Loose(_) => None,
        };
        let meta = Value::Object(
            trace
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        );
        let b = &self.backend;
        let mut result = b.ensure_session(sid, trace.created_at, &meta);
        let mut done = 0;
        if result.is_ok() {
            for p in &pending {
                let r = match p {
                    Pending::Step(pos) => {
                        let mut step = trace.session_time_steps[*pos].clone();
                        step.completed_at = None;
                        step.events.clear();
                        step.markov_blanket_messages.clear();
                        b.ensure_timestep(sid, &step)
                            .map(|id| step_ids[*pos] = Some(id))
                    }
                    Pending::Event(slot) => b
                        .insert_event(sid, step_id(&step_ids, *slot), open.event(*slot))
                        .map(drop),
                    Pending::Message(slot) => b
                        .insert_message(sid, step_id(&step_ids, *slot), open.message(*slot))
                        .map(drop),
                    Pending::EndStep(pos) => {
                        let step = &trace.session_time_steps[*pos];
                        b.update_timestep(sid, &step.step_id, step.completed_at)
                    }
                    Pending::Outcome(r) => b.insert_outcome_reward(sid, r).map(drop),
                    Pending::EventReward {
                        event_id,
                        message_id,
                        turn,
                        reward,
                    } => b
                        .insert_event_reward(sid, *event_id, *message_id, *turn, reward)
                        .map(drop),
                };
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
                done += 1;
            }
        }
        if result.is_ok() {
            result = b.update_session_counts(sid);
        }
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

    fn end_session_inner(&self, save: bool) -> R<Open> {
        let mut state = self.state();
        let open = state.open()?;
        if open.step.is_some() {
            self.end_step(open)?;
        }
        if save {
            if self.auto_save {
                self.backend.update_session_counts(&open.trace.session_id)?;
            } else {
                self.save_pending(open)?;
            }
        }
        let mut done = state.open.take().ok_or(TracingError::NoActiveSession)?;
        done.pending.clear();
        Ok(done)
    }

    /// Whether the open session is `sid`.
    fn is_open(&self, sid: &str) -> bool {
        self.state()
            .open
            .as_ref()
            .is_some_and(|o| o.trace.session_id == sid)
    }

    /// Whether step `pos` of session `sid` is the open step.
    fn step_is_open(&self, sid: &str, pos: usize) -> bool {
        self.state()
            .open
            .as_ref()
            .is_some_and(|o| o.trace.session_id == sid && o.step.is_some_and(|s| s.pos == pos))
    }
}

fn int_or_none(py: Python<'_>, id: Option<i64>) -> PyResult<Py<PyAny>> {
    Ok(match id {
        Some(id) => id.into_pyobject(py)?.into_any().unbind(),
        None => py.None(),
    })
}

#[pymethods]
impl Tracer {
    /// A tracer writing to ``storage`` (a ``LibsqlTraceStorage`` or a
    /// ``BufferedTraceWriter``).
    #[new]
    #[pyo3(signature = (storage, auto_save=true))]
    fn py_new(storage: &Bound<'_, Storage>, auto_save: bool) -> Self {
        Tracer::new(storage, auto_save)
    }

    /// A tracer over ``LibsqlTraceStorage.memory()``, as in the original.
    #[staticmethod]
    #[pyo3(signature = (auto_save=true, **opts))]
    fn memory(py: Python<'_>, auto_save: bool, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let s = open_plain(py, Target::Memory, opts)?;
        Ok(Tracer::new(s.bind(py).as_super(), auto_save))
    }

    /// A tracer over ``LibsqlTraceStorage.file(path)``, as in the original.
    #[staticmethod]
    #[pyo3(signature = (path, auto_save=true, **opts))]
    fn file(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let p: std::path::PathBuf = path.extract()?;
        let p = p.to_string_lossy().into_owned();
        let s = open_plain(py, Target::File(p), opts)?;
        Ok(Tracer::new(s.bind(py).as_super(), auto_save))
    }

    /// A tracer over ``BufferedTraceWriter.open(path_or_url, **opts)``.
    #[staticmethod]
    #[pyo3(signature = (path_or_url, auto_save=true, **opts))]
    fn buffered(
        py: Python<'_>,
        path_or_url: &Bound<'_, PyAny>,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let p: std::path::PathBuf = path_or_url.extract()?;
        let p = p.to_string_lossy().into_owned();
        let s = open_writer(py, Target::Url(p, None), opts)?;
        Ok(Tracer::new(s.bind(py).as_super(), auto_save))
    }

    /// The storage it writes to.
    #[getter]
    fn storage(&self, py: Python<'_>) -> Py<Storage> {
        self.storage.clone_ref(py)
    }

    /// Whether records are written as they are made.
    #[getter]
    fn auto_save(&self) -> bool {
        self.auto_save
    }

    /// The id of the open session, or ``None``.
    #[getter]
    fn session_id(&self) -> Option<String> {
        self.state()
            .open
            .as_ref()
            .map(|o| o.trace.session_id.clone())
    }

    /// Starts a session and returns its id: ``session_id``, or a new UUID.
    /// Raises ``SessionAlreadyActiveError`` if one is open.
    #[pyo3(signature = (session_id=None, metadata=None))]
    fn start_session(
        &self,
        py: Python<'_>,
        session_id: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let meta = convert::json_object("metadata", metadata)?;
        py.detach(|| self.start_session_inner(session_id, meta))
            .map_err(err)
    }

    /// Starts a timestep, ending the open one.
    #[pyo3(signature = (step_id, turn_number=None, metadata=None))]
    fn start_timestep(
        &self,
        py: Python<'_>,
        step_id: String,
        turn_number: Option<i32>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let meta = convert::metadata("metadata", metadata)?;
        py.detach(|| self.start_timestep_inner(&step_id, turn_number, meta))
            .map_err(err)
    }

    /// Ends the open timestep (``NoActiveTimestepError`` if none is open).
    fn end_timestep(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.end_timestep_inner()).map_err(err)
    }

    /// Records an event dict in the open session (and timestep, if one is
    /// open). Returns its id, or ``None`` with ``auto_save=False``.
    fn record_event(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let event = convert::event(event)?;
        let id = py.detach(|| self.record_event_inner(event)).map_err(err)?;
        int_or_none(py, id)
    }

    /// Records a message dict (``content``, ``message_type``, optional
    /// ``time_record`` (default now) and ``metadata``). Returns its id, or
    /// ``None`` with ``auto_save=False``.
    fn record_message(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = convert::message(message)?;
        let id = py.detach(|| self.record_message_inner(msg)).map_err(err)?;
        int_or_none(py, id)
    }

    /// Records the session's outcome reward dict. Returns its id, or
    /// ``None`` with ``auto_save=False``.
    fn record_outcome_reward(
        &self,
        py: Python<'_>,
        reward: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let reward: OutcomeReward = convert::model("reward", reward)?;
        let id = py
            .detach(|| self.record_outcome_reward_inner(reward))
            .map_err(err)?;
        int_or_none(py, id)
    }

    /// Records a reward for event ``event_id``. ``turn_number=None`` takes
    /// the open timestep's turn number (NULL when no step is open).
    #[pyo3(signature = (event_id, reward, message_id=None, turn_number=None))]
    fn record_event_reward(
        &self,
        py: Python<'_>,
        event_id: i64,
        reward: &Bound<'_, PyAny>,
        message_id: Option<i64>,
        turn_number: Option<i32>,
    ) -> PyResult<Py<PyAny>> {
        let reward: EventReward = convert::model("reward", reward)?;
        let id = py
            .detach(|| self.record_event_reward_inner(event_id, reward, message_id, turn_number))
            .map_err(err)?;
        int_or_none(py, id)
    }

    /// Ends the session (and its open timestep) and returns the trace dict.
    /// Its ``event_history`` and ``markov_blanket_message_history`` hold the
    /// same dict objects as the steps (each record is converted once).
    /// With ``save``, the session row's counts are made final (and, with
    /// ``auto_save=False``, everything is written now). On an error the
    /// session stays open, so the call can be repeated.
    #[pyo3(signature = (save=true))]
    fn end_session(&self, py: Python<'_>, save: bool) -> PyResult<Py<PyAny>> {
        let done = py.detach(|| self.end_session_inner(save)).map_err(err)?;
        done.to_py(py)
    }

    /// ``storage.get_session(session_id)``.
    fn get_session(&self, py: Python<'_>, session_id: String) -> PyResult<Py<PyAny>> {
        let b = &self.backend;
        let trace = py.detach(|| b.get_session(&session_id)).map_err(err)?;
        convert::to_py(py, &trace)
    }

    /// ``storage.query(sql, params)``.
    #[pyo3(signature = (sql, params=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let params = convert::params(params)?;
        let b = &self.backend;
        let rows = py.detach(|| b.query(&sql, params)).map_err(err)?;
        convert::to_py(py, &rows)
    }

    /// ``storage.delete_session(session_id)``.
    fn delete_session(&self, py: Python<'_>, session_id: String) -> PyResult<bool> {
        let b = &self.backend;
        py.detach(|| b.delete_session(&session_id)).map_err(err)
    }

    /// ``storage.flush(timeout)``: a no-op on ``LibsqlTraceStorage``.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let limit = options::timeout(timeout)?;
        let b = &self.backend;
        py.detach(|| b.flush(limit)).map_err(err)
    }

    /// ``storage.close()``.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let b = &self.backend;
        py.detach(|| b.close()).map_err(err)
    }

    /// ``await tracer.aflush()``: ``storage.aflush()``.
    #[pyo3(signature = (timeout=None))]
    fn aflush<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("timeout", timeout)?;
        self.storage
            .bind(py)
            .call_method("aflush", (), Some(&kwargs))
    }

    /// ``await tracer.aget_session(session_id)``: ``storage.aget_session()``.
    fn aget_session<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.storage
            .bind(py)
            .call_method1("aget_session", (session_id,))
    }

    /// ``await tracer.aquery(sql, params)``: ``storage.aquery()``.
    #[pyo3(signature = (sql, params=None))]
    fn aquery<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.storage.bind(py).call_method1("aquery", (sql, params))
    }

    /// ``await tracer.aclose()``: ``storage.aclose()``.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.storage.bind(py).call_method0("aclose")
    }

    /// ``with tracer.session(session_id=None, metadata=None) as sid:`` starts
    /// a session and ends it (saving it) on exit, also on an exception.
    #[pyo3(signature = (session_id=None, metadata=None))]
    fn session(
        slf: Py<Self>,
        session_id: Option<String>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> SessionScope {
        SessionScope {
            tracer: slf,
            session_id,
            metadata: metadata.map(|m| m.clone().unbind()),
            started: Mutex::new(None),
        }
    }

    /// ``with tracer.timestep(step_id, turn_number=None, metadata=None):``
    /// starts a timestep and ends it on exit, unless it was ended already.
    #[pyo3(signature = (step_id, turn_number=None, metadata=None))]
    fn timestep(
        slf: Py<Self>,
        step_id: String,
        turn_number: Option<i32>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> TimestepScope {
        TimestepScope {
            tracer: slf,
            step_id,
            turn_number,
            metadata: metadata.map(|m| m.clone().unbind()),
            started: Mutex::new(None),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the storage (a writer flushes first).
    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        exit(py, &self.backend, exc)
    }

    fn __aenter__<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        crate::runtime::ready(py, slf.into_any())
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        exc_type: Option<&Bound<'py, PyAny>>,
        exc: Option<&Bound<'py, PyAny>>,
        tb: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let _ = (exc_type, tb);
        aexit(py, &self.backend, exc)
    }
}

/// The context manager of ``tracer.session()``.
#[pyclass(frozen, module = "trace_writer", name = "_SessionScope")]
pub(crate) struct SessionScope {
    tracer: Py<Tracer>,
    session_id: Option<String>,
    metadata: Option<Py<PyAny>>,
    /// The session it started.
    started: Mutex<Option<String>>,
}

/// Runs `close` on leaving a block: an error from it propagates if the
/// block succeeded, and is chained to the block's exception otherwise.
fn leave(py: Python<'_>, exc: Option<&Bound<'_, PyAny>>, result: PyResult<()>) -> PyResult<bool> {
    match (result, exc) {
        (Ok(()), _) => Ok(false),
        (Err(e), Some(exc)) if !exc.is_none() => {
            chain_to(py, exc, e)?;
            Ok(false)
        }
        (Err(e), _) => Err(e),
    }
}

#[pymethods]
impl SessionScope {
    fn __enter__(&self, py: Python<'_>) -> PyResult<String> {
        let tracer = self.tracer.get();
        let meta = self.metadata.as_ref().map(|m| m.bind(py).clone());
        let sid = tracer.start_session(py, self.session_id.clone(), meta.as_ref())?;
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(sid.clone());
        Ok(sid)
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tracer = self.tracer.get();
        let result = match started {
            // Ended already inside the block: nothing to do.
            Some(sid) if tracer.is_open(&sid) => py
                .detach(|| tracer.end_session_inner(true))
                .map(drop)
                .map_err(err),
            _ => Ok(()),
        };
        leave(py, exc, result)
    }
}

/// The context manager of ``tracer.timestep()``.
#[pyclass(frozen, module = "trace_writer", name = "_TimestepScope")]
pub(crate) struct TimestepScope {
    tracer: Py<Tracer>,
    step_id: String,
    turn_number: Option<i32>,
    metadata: Option<Py<PyAny>>,
    /// The session and the step's index that it started.
    started: Mutex<Option<(String, usize)>>,
}

#[pymethods]
impl TimestepScope {
    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        let tracer = self.tracer.get();
        let meta = self.metadata.as_ref().map(|m| m.bind(py).clone());
        tracer.start_timestep(py, self.step_id.clone(), self.turn_number, meta.as_ref())?;
        let state = tracer.state();
        let started = state
            .open
            .as_ref()
            .and_then(|o| o.step.map(|step| (o.trace.session_id.clone(), step.pos)));
        drop(state);
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tracer = self.tracer.get();
        let result = match started {
            Some((sid, pos)) if tracer.step_is_open(&sid, pos) => {
                py.detach(|| tracer.end_timestep_inner()).map_err(err)
            }
            _ => Ok(()),
        };
        leave(py, exc, result)
    }
}

/// Registers the classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tracer>()?;
    m.add_class::<SessionScope>()?;
    m.add_class::<TimestepScope>()?;
    Ok(())
}
