//! `TraceStorage` (the shared base class, with the constructors and the
//! trait's methods), `LibsqlTraceStorage` and `BufferedTraceWriter`.
//!
//! - `backend`: the crate storage behind an object, and the calls that wait;
//! - `handle`: the writer's one owner, and the writers closed at exit;
//! - `open`: what a constructor opens;
//! - `classes`: the two classes, and what only the writer has.

use chrono::Utc;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyType};
use trace_writer::{EventReward, OutcomeReward, SessionTimeStep};

use crate::convert;
use crate::errors::err;
use crate::options;
use crate::runtime::{awaitable, ready};

mod backend;
mod classes;
mod handle;
mod open;

use backend::flush;
pub(crate) use backend::{aexit, exit, leave, Backend};
pub(crate) use classes::{PlainStorage, WriterStorage};
use open::{open_as, path_arg};
pub(crate) use open::{open_plain, open_writer, Target};

fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// The methods both storage classes share: the constructors, and those of
/// the crate's `TraceStorage` trait, synchronous, with the GIL released
/// while they wait.
///
/// Not constructed directly: use `LibsqlTraceStorage` or
/// `BufferedTraceWriter`.
#[pyclass(subclass, frozen, module = "trace_writer", name = "TraceStorage")]
pub(crate) struct Storage {
    pub(crate) backend: Backend,
}

#[pymethods]
impl Storage {
    /// An in-memory database. Options: ``journal_mode``, ``synchronous``,
    /// ``busy_timeout``; a ``BufferedTraceWriter`` also takes
    /// ``max_batch_ops``, ``queue_capacity``, ``queue_capacity_bytes``,
    /// ``max_op_bytes``, ``linger``, ``close_timeout``, ``flush_timeout``,
    /// ``enqueue_timeout``, ``overflow``.
    #[classmethod]
    #[pyo3(signature = (**opts))]
    fn memory(cls: &Bound<'_, PyType>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        open_as(cls, Target::Memory, opts)
    }

    /// A local database file (created if missing; its folder must exist),
    /// in WAL mode by default.
    #[classmethod]
    #[pyo3(signature = (path, **opts))]
    fn file(
        cls: &Bound<'_, PyType>,
        path: &Bound<'_, PyAny>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        open_as(cls, Target::File(path_arg(path)?), opts)
    }

    /// A remote libsql server (``libsql://``, ``http(s)://``, ``ws(s)://``).
    /// ``auth_token=""`` means no token; ``None`` takes it from the
    /// environment.
    #[classmethod]
    #[pyo3(signature = (url, auth_token=Some(String::new()), **opts))]
    fn turso(
        cls: &Bound<'_, PyType>,
        url: String,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        open_as(cls, Target::Url(url, auth_token), opts)
    }

    /// Picks the kind from the URL: ``:memory:``, a path or ``file:`` URL,
    /// or a remote URL. ``auth_token=None`` takes it from the environment.
    #[classmethod]
    #[pyo3(signature = (url, auth_token=None, **opts))]
    fn open(
        cls: &Bound<'_, PyType>,
        url: &Bound<'_, PyAny>,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        open_as(cls, Target::Url(path_arg(url)?, auth_token), opts)
    }

    /// The database named by ``SYNTH_TRACES_DB``, ``LIBSQL_URL`` or
    /// ``TURSO_DATABASE_URL`` (in memory if none is set), with the token
    /// from ``LIBSQL_AUTH_TOKEN`` or ``TURSO_AUTH_TOKEN``.
    #[classmethod]
    #[pyo3(signature = (**opts))]
    fn from_env(cls: &Bound<'_, PyType>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        open_as(cls, Target::Env, opts)
    }

    /// Creates the session row if it does not exist (idempotent).
    ///
    /// ``created_at`` is a ``datetime`` (naive means UTC) or an RFC 3339
    /// string; ``None`` means now. ``metadata`` is a JSON-able dict.
    #[pyo3(signature = (session_id, created_at=None, metadata=None))]
    fn ensure_session(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        created_at: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let at = convert::opt_time("created_at", created_at)?.unwrap_or_else(Utc::now);
        let meta = convert::json_object("metadata", metadata)?;
        self.backend
            .write(py, |s| s.ensure_session(&session_id, at, &meta))
    }

    /// Creates the timestep if it does not exist and returns its database
    /// id; a repeated call returns the same id.
    fn ensure_timestep(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        step: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let step: SessionTimeStep = convert::model("step", step)?;
        self.backend
            .write(py, |s| s.ensure_timestep(&session_id, &step))
    }

    /// Sets the timestep's ``completed_at`` (a ``datetime`` or RFC 3339
    /// string, or ``None``).
    #[pyo3(signature = (session_id, step_id, completed_at=None))]
    fn update_timestep(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        step_id: PyBackedStr,
        completed_at: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let at = convert::opt_time("completed_at", completed_at)?;
        self.backend
            .write(py, |s| s.update_timestep(&session_id, &step_id, at))
    }

    /// Inserts an event dict (tagged by ``"event_type"``) and returns its id.
    fn insert_event(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        timestep_id: Option<i64>,
        event: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let event = convert::event(event)?;
        self.backend
            .write(py, |s| s.insert_event(&session_id, timestep_id, &event))
    }

    /// Inserts a message dict and returns its id. A missing ``time_record``
    /// means now.
    fn insert_message(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        timestep_id: Option<i64>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let msg = convert::message(message)?;
        self.backend
            .write(py, |s| s.insert_message(&session_id, timestep_id, &msg))
    }

    /// Inserts a session-level reward dict and returns its id.
    fn insert_outcome_reward(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        reward: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let reward: OutcomeReward = convert::model("reward", reward)?;
        self.backend
            .write(py, |s| s.insert_outcome_reward(&session_id, &reward))
    }

    /// Inserts an event-level reward dict and returns its id.
    fn insert_event_reward(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        event_id: i64,
        message_id: Option<i64>,
        turn_number: Option<i32>,
        reward: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let reward: EventReward = convert::model("reward", reward)?;
        self.backend.write(py, |s| {
            s.insert_event_reward(&session_id, event_id, message_id, turn_number, &reward)
        })
    }

    /// Recomputes the session's ``num_timesteps``, ``num_events`` and
    /// ``num_messages``.
    fn update_session_counts(&self, py: Python<'_>, session_id: PyBackedStr) -> PyResult<()> {
        self.backend
            .write(py, |s| s.update_session_counts(&session_id))
    }

    /// The whole trace as a dict, or ``None`` if there is no such session.
    /// It sees every write made before it.
    fn get_session(&self, py: Python<'_>, session_id: PyBackedStr) -> PyResult<Py<PyAny>> {
        self.backend.py_get_session(py, &session_id)
    }

    /// Runs SQL with JSON-able ``params`` and returns one dict per row.
    #[pyo3(signature = (sql, params=None))]
    fn query(
        &self,
        py: Python<'_>,
        sql: PyBackedStr,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.backend.py_query(py, &sql, params)
    }

    /// Deletes the session and all its rows; returns whether it existed.
    fn delete_session(&self, py: Python<'_>, session_id: PyBackedStr) -> PyResult<bool> {
        self.backend.py_delete_session(py, &session_id)
    }

    /// Waits until every write made before it is committed (a writer); a
    /// no-op on ``LibsqlTraceStorage``, whose writes commit as they are made.
    ///
    /// ``timeout`` in seconds; ``None`` waits up to the writer's
    /// ``flush_timeout``. Raises ``WriteFailedError`` (with ``.count`` and
    /// ``.first_cause``) if writes failed since the previous flush, and
    /// ``TimeoutError`` past the deadline (the writes stay queued).
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.backend.py_flush(py, timeout)
    }

    /// Closes the storage. A writer drains its queue and commits first (up
    /// to ``close_timeout``, then spills: ``SpilledError``). Closing twice is
    /// fine; other calls after ``close()`` raise ``WriterClosedError`` (a
    /// writer) or ``NotInitializedError`` (``LibsqlTraceStorage``).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.backend.py_close(py)
    }

    /// ``await storage.aflush()``: ``flush()`` without blocking the event loop.
    #[pyo3(signature = (timeout=None))]
    fn aflush<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let limit = options::timeout(timeout)?;
        let w = self.backend.writer().cloned();
        let flushed = async move {
            match w {
                Some(w) => flush(&w, limit).await,
                None => Ok(()),
            }
        };
        awaitable(py, false, flushed, |py, ()| none(py))
    }

    /// ``await storage.aclose()``: ``close()`` without blocking the event loop.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.backend.storage();
        awaitable(py, false, async move { s.close().await }, |py, ()| none(py))
    }

    /// ``await storage.aget_session(session_id)``: ``get_session()`` without
    /// blocking the event loop.
    fn aget_session<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.backend.storage();
        awaitable(
            py,
            false,
            async move { s.get_session(&session_id).await },
            |py, trace| convert::to_py(py, &trace),
        )
    }

    /// ``await storage.aquery(sql, params)``: ``query()`` without blocking
    /// the event loop.
    #[pyo3(signature = (sql, params=None))]
    fn aquery<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let params = convert::params(params)?.bind(&sql).map_err(err)?;
        let s = self.backend.storage();
        awaitable(
            py,
            false,
            async move { s.query(&sql, params).await },
            |py, rows| convert::to_py(py, &rows),
        )
    }

    /// ``await storage.adelete_session(session_id)``: ``delete_session()``
    /// without blocking the event loop.
    fn adelete_session<'py>(
        &self,
        py: Python<'py>,
        session_id: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let s = self.backend.storage();
        awaitable(
            py,
            false,
            async move { s.delete_session(&session_id).await },
            |py, existed| {
                Ok(pyo3::types::PyBool::new(py, existed)
                    .to_owned()
                    .into_any()
                    .unbind())
            },
        )
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes (a writer flushes first). An error from closing while an
    /// exception is in flight is chained to it as its ``__context__``.
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
        ready(py, slf.into_any())
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
    m.add_class::<Storage>()?;
    m.add_class::<PlainStorage>()?;
    m.add_class::<WriterStorage>()?;
    m.add_function(pyo3::wrap_pyfunction!(handle::_close_open_writers, m)?)?;
    Ok(())
}
