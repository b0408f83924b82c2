//! `SessionTracer`: the crate's `trace_writer::SessionTracer` over either
//! class.
//!
//! The behaviour (session and step state, `auto_save=False`, defaults) is
//! the crate's; this file converts arguments and results and releases the
//! GIL around each call.

use std::future::Future;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use trace_writer::tracer::{HistorySlot, RecordedSession};
use trace_writer::{EventReward, OutcomeReward, SessionTracer, TracingError};

use crate::convert;
use crate::errors::err;
use crate::runtime::{awaitable, run};
use crate::storage::{aexit, exit, open_plain, open_writer, Backend, Storage, Target};

mod scope;

use scope::{SessionScope, TimestepScope};

/// A recorded session as a trace dict, its histories sharing the steps'
/// dicts (each record is converted once).
fn recorded_to_py(py: Python<'_>, rec: &RecordedSession) -> PyResult<Py<PyAny>> {
    let trace = convert::to_py(py, &rec.trace)?;
    let d = trace.bind(py).cast::<PyDict>()?;
    let steps = d
        .get_item("session_time_steps")?
        .ok_or_else(|| err(TracingError::Internal("no session_time_steps".into())))?;
    let list =
        |slots: &[HistorySlot], field: &str, loose: &dyn Fn(usize) -> PyResult<Py<PyAny>>| {
            let mut items = Vec::with_capacity(slots.len());
            for slot in slots {
                items.push(match *slot {
                    HistorySlot::Step { step, index } => steps
                        .get_item(step)?
                        .get_item(field)?
                        .get_item(index)?
                        .unbind(),
                    HistorySlot::Loose(i) => loose(i)?,
                });
            }
            PyList::new(py, items)
        };
    let events = list(&rec.event_order, "events", &|i| {
        convert::to_py(py, &rec.loose_events[i])
    })?;
    let messages = list(&rec.message_order, "markov_blanket_messages", &|i| {
        convert::to_py(py, &rec.loose_messages[i])
    })?;
    d.set_item("event_history", events)?;
    d.set_item("markov_blanket_message_history", messages)?;
    Ok(trace)
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
    /// Declared (so dropped) first: the writer clone it holds is then never
    /// the last one (see `storage::WriterHandle`).
    tracer: Arc<SessionTracer>,
    storage: Py<Storage>,
    backend: Backend,
}

impl Tracer {
    fn new(storage: &Bound<'_, Storage>, auto_save: bool) -> Self {
        let backend = storage.get().backend.clone();
        Tracer {
            tracer: Arc::new(SessionTracer::with_auto_save(backend.storage(), auto_save)),
            backend,
            storage: storage.clone().unbind(),
        }
    }

    /// Runs a call of the crate's tracer (see `runtime::run`: over the
    /// writer, it is first polled with the GIL held).
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        fut: impl Future<Output = Result<T, TracingError>> + Send,
    ) -> PyResult<T> {
        run(py, self.backend.is_writer(), fut)
    }

    /// The awaitable form of a call (see `runtime::awaitable`: over the
    /// writer, started on the event loop's thread and resolved at once if it
    /// finishes there).
    fn awaitable<'py, T, F, C>(
        &self,
        py: Python<'py>,
        fut: F,
        convert: C,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, TracingError>> + Send + 'static,
        C: for<'a> FnOnce(Python<'a>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    {
        awaitable(py, self.backend.is_writer(), fut, convert)
    }

    /// `tracer.end_session(save)`.
    fn end(&self, py: Python<'_>, save: bool) -> PyResult<RecordedSession> {
        self.run(py, self.tracer.end_session_recorded(save))
    }

    /// The open session's id and the open step's position.
    fn current_timestep(&self, py: Python<'_>) -> PyResult<Option<(String, usize)>> {
        self.run(py, async { Ok(self.tracer.current_timestep().await) })
    }

    fn current_session_id(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.run(py, async { Ok(self.tracer.current_session_id().await) })
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
    ) -> PyResult<Bound<'py, PyAny>> {
        let meta = convert::metadata("metadata", metadata)?;
        let t = self.tracer.clone();
        self.awaitable(
            py,
            async move { t.start_timestep(&step_id, turn_number, meta).await },
            |py, ()| Ok(py.None()),
        )
    }

    /// ``await tracer.aend_timestep()``: ``end_timestep()`` that does not
    /// block the event loop when it must wait.
    fn aend_timestep<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let t = self.tracer.clone();
        self.awaitable(py, async move { t.end_timestep().await }, |py, ()| {
            Ok(py.None())
        })
    }

    /// ``await tracer.aend_session(save=True)``: ``end_session()`` that does
    /// not block the event loop when it must wait.
    #[pyo3(signature = (save=true))]
    fn aend_session<'py>(&self, py: Python<'py>, save: bool) -> PyResult<Bound<'py, PyAny>> {
        let t = self.tracer.clone();
        self.awaitable(
            py,
            async move { t.end_session_recorded(save).await },
            |py, rec| recorded_to_py(py, &rec),
        )
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
        recorded_to_py(py, &done)
    }

    /// ``storage.get_session(session_id)``.
    fn get_session(&self, py: Python<'_>, session_id: String) -> PyResult<Py<PyAny>> {
        self.backend.py_get_session(py, &session_id)
    }

    /// ``storage.query(sql, params)``.
    #[pyo3(signature = (sql, params=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.backend.py_query(py, &sql, params)
    }

    /// ``storage.delete_session(session_id)``.
    fn delete_session(&self, py: Python<'_>, session_id: String) -> PyResult<bool> {
        self.backend.py_delete_session(py, &session_id)
    }

    /// ``storage.flush(timeout)``: a no-op on ``LibsqlTraceStorage``.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.backend.py_flush(py, timeout)
    }

    /// ``storage.close()``.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.backend.py_close(py)
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

/// Registers the classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tracer>()?;
    m.add_class::<SessionScope>()?;
    m.add_class::<TimestepScope>()?;
    Ok(())
}
