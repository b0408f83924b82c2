//! The methods of `TraceStorage`: the constructors, written once for both
//! classes, and the trait's write calls.

use chrono::Utc;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyDict, PyType};
use trace_writer::{EventReward, OutcomeReward, SessionTimeStep};

use crate::convert;
use crate::storage::classes::Storage;
use crate::storage::open::{open_as, path_arg, Target};

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
}
