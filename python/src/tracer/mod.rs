//! `SessionTracer`: the crate's `trace_writer::SessionTracer` over either
//! class.
//!
//! The behaviour (session and step state, `auto_save=False`, defaults) is
//! the crate's; these files convert arguments and results and release the
//! GIL around each call. The calls a tracer passes through to its storage
//! are on its base class (`storage::StorageCalls`).

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::PyClassInitializer;
use trace_writer::{EventReward, OutcomeReward};

use crate::convert;
use crate::runtime::{awaitable, Awaitable};
use crate::storage::{open, PlainStorage, Storage, StorageClass, Target, WriterStorage};

mod class;
mod recorded;
mod scope;

use class::Tracer;
use recorded::{int_or_none, recorded_to_py};
use scope::{Scope, SessionScope, TimestepScope};

impl Tracer {
    /// A tracer over a new storage of class `C`, opened on `target` (the
    /// three constructors that open their storage).
    fn opening<C: StorageClass>(
        py: Python<'_>,
        target: Target,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        let storage = open::<C>(py, target, opts)?;
        Py::new(py, Tracer::new(storage.bind(py).as_super(), auto_save))
    }
}

/// A path (a str or an ``os.PathLike``), not valid UTF-8 parts replaced,
/// as the original's constructors took it.
fn lossy_path(path: &Bound<'_, PyAny>) -> PyResult<String> {
    let p: std::path::PathBuf = path.extract()?;
    Ok(p.to_string_lossy().into_owned())
}

#[pymethods]
impl Tracer {
    /// A tracer writing to ``storage`` (a ``LibsqlTraceStorage`` or a
    /// ``BufferedTraceWriter``).
    #[new]
    #[pyo3(signature = (storage, auto_save=true))]
    fn py_new(storage: &Bound<'_, Storage>, auto_save: bool) -> PyClassInitializer<Self> {
        Tracer::new(storage, auto_save)
    }

    /// A tracer over ``LibsqlTraceStorage.memory()``, as in the original.
    #[staticmethod]
    #[pyo3(signature = (auto_save=true, **opts))]
    fn memory(
        py: Python<'_>,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        Tracer::opening::<PlainStorage>(py, Target::Memory, auto_save, opts)
    }

    /// A tracer over ``LibsqlTraceStorage.file(path)``, as in the original.
    #[staticmethod]
    #[pyo3(signature = (path, auto_save=true, **opts))]
    fn file(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        let target = Target::File(lossy_path(path)?);
        Tracer::opening::<PlainStorage>(py, target, auto_save, opts)
    }

    /// A tracer over ``BufferedTraceWriter.open(path_or_url, **opts)``.
    #[staticmethod]
    #[pyo3(signature = (path_or_url, auto_save=true, **opts))]
    fn buffered(
        py: Python<'_>,
        path_or_url: &Bound<'_, PyAny>,
        auto_save: bool,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        let target = Target::Url(lossy_path(path_or_url)?, None);
        Tracer::opening::<WriterStorage>(py, target, auto_save, opts)
    }

    /// The storage it writes to.
    #[getter]
    fn storage(&self, py: Python<'_>) -> Py<Storage> {
        self.storage.clone_ref(py)
    }

    /// Whether records are written as they are made.
    #[getter]
    fn auto_save(&self) -> bool {
        self.tracer.auto_save()
    }

    /// The id of the open session, or ``None``.
    #[getter]
    fn session_id(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.current_session_id(py)
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
        let meta = convert::metadata("metadata", metadata)?;
        self.run(py, self.tracer.start_session(session_id.as_deref(), meta))
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
        self.run(py, self.tracer.start_timestep(&step_id, turn_number, meta))
    }

    /// Ends the open timestep (``NoActiveTimestepError`` if none is open).
    fn end_timestep(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, self.tracer.end_timestep())
    }

    /// ``await tracer.astart_timestep(...)``: ``start_timestep()`` that does
    /// not block the event loop when it must wait (the first step of a
    /// session the writer has not seen loads its steps).
    #[pyo3(signature = (step_id, turn_number=None, metadata=None))]
    fn astart_timestep<'py>(
        &self,
        py: Python<'py>,
        step_id: String,
        turn_number: Option<i32>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> Awaitable<'py> {
        let meta = convert::metadata("metadata", metadata)?;
        let t = self.tracer.clone();
        let started = async move { t.start_timestep(&step_id, turn_number, meta).await };
        awaitable(py, self.is_writer(), started, |py, ()| Ok(py.None()))
    }

    /// ``await tracer.aend_timestep()``: ``end_timestep()`` that does not
    /// block the event loop when it must wait.
    fn aend_timestep<'py>(&self, py: Python<'py>) -> Awaitable<'py> {
        let t = self.tracer.clone();
        let ended = async move { t.end_timestep().await };
        awaitable(py, self.is_writer(), ended, |py, ()| Ok(py.None()))
    }

    /// ``await tracer.aend_session(save=True)``: ``end_session()`` that does
    /// not block the event loop when it must wait.
    #[pyo3(signature = (save=true))]
    fn aend_session<'py>(&self, py: Python<'py>, save: bool) -> Awaitable<'py> {
        let t = self.tracer.clone();
        let ended = async move { t.end_session_recorded(save).await };
        let last = self.last.clone();
        awaitable(py, self.is_writer(), ended, move |py, rec| {
            let trace = recorded_to_py(py, &rec);
            last.keep(rec);
            trace
        })
    }

    /// Records an event dict in the open session (and timestep, if one is
    /// open). Returns its id, or ``None`` with ``auto_save=False``.
    fn record_event(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let event = convert::event(event)?;
        let id = self.run(py, self.tracer.record_event(event))?;
        int_or_none(py, id)
    }

    /// Records a message dict (``content``, ``message_type``, optional
    /// ``time_record`` (default now) and ``metadata``). Returns its id, or
    /// ``None`` with ``auto_save=False``.
    fn record_message(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let msg = convert::message(message)?;
        let id = self.run(py, self.tracer.record_markov_message(msg))?;
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
        let id = self.run(py, self.tracer.record_outcome_reward(reward))?;
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
        let id = self.run(
            py,
            (self.tracer).record_event_reward_for(event_id, reward, message_id, turn_number),
        )?;
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
        let done = self.end(py, save)?;
        let trace = recorded_to_py(py, &done);
        self.last.keep(done);
        trace
    }

    /// The trace of the last session this tracer ended, as ``end_session``
    /// returned it, or ``None``. Each call builds a new dict: the tracer
    /// keeps the session natively, not the dict it returned, so a trace its
    /// caller drops is freed at once rather than kept alive for Python's
    /// collector to scan.
    fn last_trace(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.last.get() {
            Some(rec) => recorded_to_py(py, &rec),
            None => Ok(py.None()),
        }
    }

    /// ``with tracer.session(session_id=None, metadata=None) as sid:`` starts
    /// a session and ends it (saving it) on exit, also on an exception.
    #[pyo3(signature = (session_id=None, metadata=None))]
    fn session(
        slf: &Bound<'_, Self>,
        session_id: Option<String>,
        metadata: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<SessionScope>> {
        let metadata = metadata.map(Bound::unbind);
        Scope::open(
            slf,
            SessionScope {
                session_id,
                metadata,
            },
        )
    }

    /// ``with tracer.timestep(step_id, turn_number=None, metadata=None):``
    /// starts a timestep and ends it on exit, unless it was ended already.
    #[pyo3(signature = (step_id, turn_number=None, metadata=None))]
    fn timestep(
        slf: &Bound<'_, Self>,
        step_id: String,
        turn_number: Option<i32>,
        metadata: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimestepScope>> {
        let metadata = metadata.map(Bound::unbind);
        let scope = TimestepScope {
            step_id,
            turn_number,
            metadata,
        };
        Scope::open(slf, scope)
    }
}

/// Registers the classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tracer>()?;
    m.add_class::<SessionScope>()?;
    m.add_class::<TimestepScope>()?;
    Ok(())
}
