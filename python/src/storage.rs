//! `TraceStorage` (the shared base class), `LibsqlTraceStorage` and
//! `BufferedTraceWriter`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyDict;
use pyo3::PyClassInitializer;
use serde_json::Value;
use trace_writer::{
    BlockingWriter, BufferedTraceWriter, EventReward, LibsqlTraceStorage, MarkovBlanketMessage,
    OutcomeReward, QueryParams, SessionTimeStep, SessionTrace, StorageConfig, TraceStorage,
    TracingError, TracingEvent,
};

use crate::convert;
use crate::errors::{chain_to, err};
use crate::options::{self, Options};
use crate::runtime::{awaitable, ready, wait};

/// The Rust storage behind a Python object: cheap to clone, `Send + Sync`.
///
/// Every method blocks its thread: call it with the GIL released.
#[derive(Clone)]
pub(crate) enum Backend {
    Plain(Arc<LibsqlTraceStorage>),
    Writer(Arc<WriterHandle>),
}

/// The calls that wait for the database, as both Python classes (and the
/// tracer's passthroughs) expose them: the GIL released while they wait,
/// the result converted.
impl Backend {
    /// Raises a `RuntimeWarning` for each second SQLite library found with
    /// the database open in this process since the last call (the crate's
    /// `take_foreign_sqlite_warnings`).
    pub(crate) fn warn_foreign(&self, py: Python<'_>) -> PyResult<()> {
        let warnings = match self {
            Backend::Plain(s) => s.take_foreign_sqlite_warnings(),
            Backend::Writer(h) => h.writer().take_foreign_sqlite_warnings(),
        };
        let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
        for text in warnings {
            let text =
                std::ffi::CString::new(text.replace('\0', " ")).expect("NUL bytes were replaced");
            PyErr::warn(py, &category, &text, 1)?;
        }
        Ok(())
    }

    pub(crate) fn py_get_session(&self, py: Python<'_>, sid: &str) -> PyResult<Py<PyAny>> {
        self.warn_foreign(py)?;
        let trace = py.detach(|| self.get_session(sid)).map_err(err)?;
        convert::to_py(py, &trace)
    }

    pub(crate) fn py_query(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.warn_foreign(py)?;
        let params = convert::params(params)?;
        let rows = py.detach(|| self.query(sql, params)).map_err(err)?;
        convert::to_py(py, &rows)
    }

    pub(crate) fn py_delete_session(&self, py: Python<'_>, sid: &str) -> PyResult<bool> {
        self.warn_foreign(py)?;
        py.detach(|| self.delete_session(sid)).map_err(err)
    }

    pub(crate) fn py_flush(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.warn_foreign(py)?;
        let limit = options::timeout(timeout)?;
        py.detach(|| self.flush(limit)).map_err(err)
    }

    pub(crate) fn py_close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.close()).map_err(err)
    }
}

/// A writer, its blocking handle and its `dyn TraceStorage` form. The
/// Python object and every tracer over it share one `Arc`; the registry
/// below holds only a `Weak`, so a writer dropped without `close()` still
/// drains.
///
/// Every clone of the writer that Python objects hold lives here (a
/// tracer's crate `SessionTracer` holds `storage`, and is dropped before
/// its handle), so the last one is dropped by [`WriterHandle`]'s `Drop`,
/// which releases the GIL first: dropping the last clone closes the writer
/// and waits for its commit (up to `close_timeout`).
pub(crate) struct WriterHandle {
    /// Always `Some` until dropped.
    parts: Option<WriterParts>,
}

struct WriterParts {
    writer: BufferedTraceWriter,
    blocking: BlockingWriter,
    storage: Arc<dyn TraceStorage>,
}

/// `parts` is taken only by `drop`.
const BUG: &str = "a writer handle is used after its drop: a bug in trace_writer";

impl WriterHandle {
    fn new(writer: BufferedTraceWriter) -> Self {
        let blocking = writer.blocking();
        let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
        WriterHandle {
            parts: Some(WriterParts {
                writer,
                blocking,
                storage,
            }),
        }
    }

    fn parts(&self) -> &WriterParts {
        self.parts.as_ref().expect(BUG)
    }

    fn writer(&self) -> &BufferedTraceWriter {
        &self.parts().writer
    }

    fn blocking(&self) -> &BlockingWriter {
        &self.parts().blocking
    }
}

impl Drop for WriterHandle {
    /// Drops the writer with the GIL released: if this was the last handle,
    /// the writer closes and waits for its commit here, and other Python
    /// threads run meanwhile.
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            let mut parts = Some(parts);
            // Not attached (the interpreter is gone, or this thread never
            // held it): nothing to release.
            let _ = Python::try_attach(|py| py.detach(|| drop(parts.take())));
            drop(parts);
        }
    }
}

/// The writers opened from Python that may still be open, for the
/// interpreter's exit (see `close_open_writers`).
static OPEN_WRITERS: std::sync::Mutex<Vec<std::sync::Weak<WriterHandle>>> =
    std::sync::Mutex::new(Vec::new());

fn remember(handle: &Arc<WriterHandle>) {
    let mut open = OPEN_WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    open.retain(|w| w.strong_count() > 0);
    open.push(Arc::downgrade(handle));
}

/// Flushes and closes every writer still open: called by an `atexit` hook
/// of the package, so that a script that never called `close()` does not
/// lose the writes still queued when the interpreter exits (the drop of a
/// writer's last handle commits on the dropping thread, which may never run
/// again once the interpreter is finalizing).
/// Returns one message per writer that failed to close.
#[pyfunction]
pub(crate) fn _close_open_writers(py: Python<'_>) -> Vec<String> {
    let open: Vec<Arc<WriterHandle>> = {
        let mut open = OPEN_WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        open.drain(..).filter_map(|w| w.upgrade()).collect()
    };
    py.detach(|| {
        open.iter()
            .filter_map(|h| {
                let s: Arc<dyn TraceStorage> = Arc::new(h.writer().clone());
                let w = Some(h.writer().clone());
                wait(async move { shutdown(w, s).await }).err()
            })
            .map(|e| e.to_string())
            .collect()
    })
}

type R<T> = Result<T, TracingError>;

impl Backend {
    /// The crate storage behind the backend.
    pub(crate) fn storage(&self) -> Arc<dyn TraceStorage> {
        match self {
            Backend::Plain(s) => s.clone(),
            Backend::Writer(h) => h.parts().storage.clone(),
        }
    }

    pub(crate) fn ensure_session(&self, sid: &str, at: DateTime<Utc>, meta: &Value) -> R<()> {
        match self {
            Backend::Plain(s) => wait(s.ensure_session(sid, at, meta)),
            Backend::Writer(h) => h.blocking().ensure_session(sid, at, meta),
        }
    }

    pub(crate) fn ensure_timestep(&self, sid: &str, step: &SessionTimeStep) -> R<i64> {
        match self {
            Backend::Plain(s) => wait(s.ensure_timestep(sid, step)),
            Backend::Writer(h) => h.blocking().ensure_timestep(sid, step),
        }
    }

    pub(crate) fn update_timestep(
        &self,
        sid: &str,
        step_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> R<()> {
        match self {
            Backend::Plain(s) => wait(s.update_timestep(sid, step_id, at)),
            Backend::Writer(h) => h.blocking().update_timestep(sid, step_id, at),
        }
    }

    pub(crate) fn insert_event(&self, sid: &str, ts: Option<i64>, e: &TracingEvent) -> R<i64> {
        match self {
            Backend::Plain(s) => wait(s.insert_event(sid, ts, e)),
            Backend::Writer(h) => h.blocking().insert_event(sid, ts, e),
        }
    }

    pub(crate) fn insert_message(
        &self,
        sid: &str,
        ts: Option<i64>,
        m: &MarkovBlanketMessage,
    ) -> R<i64> {
        match self {
            Backend::Plain(s) => wait(s.insert_message(sid, ts, m)),
            Backend::Writer(h) => h.blocking().insert_message(sid, ts, m),
        }
    }

    pub(crate) fn insert_outcome_reward(&self, sid: &str, r: &OutcomeReward) -> R<i64> {
        match self {
            Backend::Plain(s) => wait(s.insert_outcome_reward(sid, r)),
            Backend::Writer(h) => h.blocking().insert_outcome_reward(sid, r),
        }
    }

    pub(crate) fn insert_event_reward(
        &self,
        sid: &str,
        event_id: i64,
        message_id: Option<i64>,
        turn: Option<i32>,
        r: &EventReward,
    ) -> R<i64> {
        match self {
            Backend::Plain(s) => wait(s.insert_event_reward(sid, event_id, message_id, turn, r)),
            Backend::Writer(h) => h
                .blocking()
                .insert_event_reward(sid, event_id, message_id, turn, r),
        }
    }

    pub(crate) fn update_session_counts(&self, sid: &str) -> R<()> {
        let s = self.storage();
        wait(s.update_session_counts(sid))
    }

    pub(crate) fn get_session(&self, sid: &str) -> R<Option<SessionTrace>> {
        let s = self.storage();
        wait(s.get_session(sid))
    }

    pub(crate) fn query(&self, sql: &str, params: QueryParams) -> R<Vec<Value>> {
        let params = params.bind(sql)?;
        let s = self.storage();
        wait(s.query(sql, params))
    }

    pub(crate) fn delete_session(&self, sid: &str) -> R<bool> {
        let s = self.storage();
        wait(s.delete_session(sid))
    }

    /// Waits until everything queued is committed; a no-op on the plain
    /// backend, whose calls commit before they return.
    pub(crate) fn flush(&self, timeout: Option<Duration>) -> R<()> {
        match self {
            Backend::Plain(_) => Ok(()),
            Backend::Writer(h) => match timeout {
                None => h.blocking().flush(),
                Some(limit) => {
                    let w = h.writer().clone();
                    wait(async move { flush_within(&w, limit).await })
                }
            },
        }
    }

    pub(crate) fn close(&self) -> R<()> {
        let s = self.storage();
        wait(s.close())
    }

    /// What leaving a `with` block does: flush (a writer), then close.
    pub(crate) fn shutdown(&self) -> R<()> {
        let s = self.storage();
        let w = self.writer().cloned();
        wait(async move { shutdown(w, s).await })
    }

    pub(crate) fn writer(&self) -> Option<&BufferedTraceWriter> {
        match self {
            Backend::Plain(_) => None,
            Backend::Writer(h) => Some(h.writer()),
        }
    }
}

async fn flush_within(w: &BufferedTraceWriter, limit: Duration) -> R<()> {
    tokio::time::timeout(limit, w.flush())
        .await
        .unwrap_or_else(|_| {
            Err(TracingError::Timeout(format!(
                "flush did not finish within {limit:?}; the writes stay queued"
            )))
        })
}

/// Flush, then close even if the flush failed. The error from closing wins
/// (a `SpilledError` says where the writes went), else the flush's (a
/// `WriteFailedError` counts the failed writes). A flush on a closed writer
/// is not an error here: closing twice is fine.
async fn shutdown(w: Option<BufferedTraceWriter>, s: Arc<dyn TraceStorage>) -> R<()> {
    let flushed = match w {
        Some(w) => match w.flush().await {
            Err(TracingError::WriterClosed) => Ok(()),
            other => other,
        },
        None => Ok(()),
    };
    let closed = s.close().await;
    closed.and(flushed)
}

/// `__exit__`: close, and chain a closing error to the exception in flight.
pub(crate) fn exit(
    py: Python<'_>,
    backend: &Backend,
    exc: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let result = py.detach(|| backend.shutdown());
    match (result, exc) {
        (Ok(()), _) => Ok(false),
        (Err(e), Some(exc)) if !exc.is_none() => {
            chain_to(py, exc, err(e))?;
            Ok(false)
        }
        (Err(e), _) => Err(err(e)),
    }
}

/// `__aexit__`: as [`exit`], without blocking the event loop.
pub(crate) fn aexit<'py>(
    py: Python<'py>,
    backend: &Backend,
    exc: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let s = backend.storage();
    let w = backend.writer().cloned();
    let exc = exc.filter(|e| !e.is_none()).map(|e| e.clone().unbind());
    awaitable(
        py,
        async move { Ok(shutdown(w, s).await) },
        move |py, result| {
            let done = false.into_pyobject(py)?.to_owned().into_any().unbind();
            match (result, exc) {
                (Ok(()), _) => Ok(done),
                (Err(e), Some(exc)) => {
                    chain_to(py, exc.bind(py), err(e))?;
                    Ok(done)
                }
                (Err(e), None) => Err(err(e)),
            }
        },
    )
}

fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// The methods both storage classes share: those of the crate's
/// `TraceStorage` trait, synchronous, with the GIL released while they wait.
///
/// Not constructed directly: use `LibsqlTraceStorage` or
/// `BufferedTraceWriter`.
#[pyclass(subclass, frozen, module = "trace_writer", name = "TraceStorage")]
pub(crate) struct Storage {
    pub(crate) backend: Backend,
}

#[pymethods]
impl Storage {
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.ensure_session(&session_id, at, &meta))
            .map_err(err)
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.ensure_timestep(&session_id, &step))
            .map_err(err)
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.update_timestep(&session_id, &step_id, at))
            .map_err(err)
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.insert_event(&session_id, timestep_id, &event))
            .map_err(err)
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.insert_message(&session_id, timestep_id, &msg))
            .map_err(err)
    }

    /// Inserts a session-level reward dict and returns its id.
    fn insert_outcome_reward(
        &self,
        py: Python<'_>,
        session_id: PyBackedStr,
        reward: &Bound<'_, PyAny>,
    ) -> PyResult<i64> {
        let reward: OutcomeReward = convert::model("reward", reward)?;
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.insert_outcome_reward(&session_id, &reward))
            .map_err(err)
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
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.insert_event_reward(&session_id, event_id, message_id, turn_number, &reward))
            .map_err(err)
    }

    /// Recomputes the session's ``num_timesteps``, ``num_events`` and
    /// ``num_messages``.
    fn update_session_counts(&self, py: Python<'_>, session_id: PyBackedStr) -> PyResult<()> {
        let b = &self.backend;
        b.warn_foreign(py)?;
        py.detach(|| b.update_session_counts(&session_id))
            .map_err(err)
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
        awaitable(
            py,
            async move {
                match (w, limit) {
                    (None, _) => Ok(()),
                    (Some(w), None) => w.flush().await,
                    (Some(w), Some(limit)) => flush_within(&w, limit).await,
                }
            },
            |py, ()| none(py),
        )
    }

    /// ``await storage.aclose()``: ``close()`` without blocking the event loop.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let s = self.backend.storage();
        awaitable(py, async move { s.close().await }, |py, ()| none(py))
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

/// How a constructor names its database.
pub(crate) enum Target {
    Memory,
    File(String),
    /// A URL of any kind, and its token: `None` takes the environment's,
    /// `""` means none.
    Url(String, Option<String>),
    Env,
}

impl Target {
    fn config(self) -> StorageConfig {
        match self {
            Target::Memory => StorageConfig::memory(),
            Target::File(path) => StorageConfig::file(path),
            Target::Url(url, token) => {
                let mut c = StorageConfig::file(url);
                c.auth_token = match token {
                    None => StorageConfig::from_env().auth_token,
                    Some(t) if t.is_empty() => None,
                    Some(t) => Some(t),
                };
                c
            }
            Target::Env => StorageConfig::from_env(),
        }
    }
}

fn path_arg(path: &Bound<'_, PyAny>) -> PyResult<String> {
    let p: std::path::PathBuf = path.extract()?;
    p.into_os_string().into_string().map_err(|p| {
        pyo3::exceptions::PyValueError::new_err(format!("path is not valid UTF-8: {p:?}"))
    })
}

/// Opens the plain backend.
pub(crate) fn open_plain(
    py: Python<'_>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PlainStorage>> {
    let options = Options::parse(opts, false)?;
    let config = options.storage(target.config());
    let storage = py
        .detach(|| wait(LibsqlTraceStorage::new(config)))
        .map_err(err)?;
    let backend = Backend::Plain(Arc::new(storage));
    Py::new(
        py,
        PyClassInitializer::from(Storage { backend }).add_subclass(PlainStorage),
    )
}

/// Opens the writer.
pub(crate) fn open_writer(
    py: Python<'_>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<WriterStorage>> {
    let options = Options::parse(opts, true)?;
    let config = options.storage(target.config());
    let writer_config = options.writer;
    let writer = py
        .detach(|| wait(BufferedTraceWriter::new(config, writer_config)))
        .map_err(err)?;
    let handle = Arc::new(WriterHandle::new(writer));
    remember(&handle);
    let backend = Backend::Writer(handle);
    Py::new(
        py,
        PyClassInitializer::from(Storage { backend }).add_subclass(WriterStorage),
    )
}

/// The plain backend: one statement per call, committed before it returns,
/// as the original tracing module ran.
///
/// >>> from trace_writer import LibsqlTraceStorage
/// >>> with LibsqlTraceStorage.memory() as storage:
/// ...     storage.ensure_session("s1")
/// ...     storage.get_session("s1")["session_id"]
/// 's1'
#[pyclass(extends = Storage, frozen, module = "trace_writer", name = "LibsqlTraceStorage")]
pub(crate) struct PlainStorage;

#[pymethods]
impl PlainStorage {
    /// An in-memory database. Options: ``journal_mode``, ``synchronous``,
    /// ``busy_timeout``.
    #[staticmethod]
    #[pyo3(signature = (**opts))]
    fn memory(py: Python<'_>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Self>> {
        open_plain(py, Target::Memory, opts)
    }

    /// A local database file (created if missing; its folder must exist).
    #[staticmethod]
    #[pyo3(signature = (path, **opts))]
    fn file(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_plain(py, Target::File(path_arg(path)?), opts)
    }

    /// A remote libsql server (``libsql://``, ``http(s)://``, ``ws(s)://``).
    /// ``auth_token=""`` means no token; ``None`` takes it from the
    /// environment.
    #[staticmethod]
    #[pyo3(signature = (url, auth_token=Some(String::new()), **opts))]
    fn turso(
        py: Python<'_>,
        url: String,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_plain(py, Target::Url(url, auth_token), opts)
    }

    /// Picks the kind from the URL: ``:memory:``, a path or ``file:`` URL,
    /// or a remote URL. ``auth_token=None`` takes it from the environment.
    #[staticmethod]
    #[pyo3(signature = (url, auth_token=None, **opts))]
    fn open(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_plain(py, Target::Url(path_arg(url)?, auth_token), opts)
    }

    /// The database named by ``SYNTH_TRACES_DB``, ``LIBSQL_URL`` or
    /// ``TURSO_DATABASE_URL`` (in memory if none is set), with the token
    /// from ``LIBSQL_AUTH_TOKEN`` or ``TURSO_AUTH_TOKEN``.
    #[staticmethod]
    #[pyo3(signature = (**opts))]
    fn from_env(py: Python<'_>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Self>> {
        open_plain(py, Target::Env, opts)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        match &slf.as_super().get().backend {
            Backend::Plain(s) => format!("LibsqlTraceStorage({:?})", s.config().redacted_url()),
            Backend::Writer(..) => "LibsqlTraceStorage(?)".into(),
        }
    }
}

/// The batching writer. Write calls validate and serialize the row on the
/// calling thread, queue it and return its id in microseconds; one
/// background thread commits batches.
///
/// Write calls block only under backpressure (the queue is full) and then
/// at most ``enqueue_timeout`` seconds, with the GIL released. Pass
/// ``overflow="reject"`` for code that must never block the event loop: a
/// full queue then raises ``QueueFullError`` at once.
///
/// >>> from trace_writer import BufferedTraceWriter
/// >>> with BufferedTraceWriter.memory(overflow="reject") as writer:
/// ...     writer.ensure_session("s1")
/// ...     writer.flush()
/// ...     writer.stats()["committed"]
/// 1
#[pyclass(extends = Storage, frozen, module = "trace_writer", name = "BufferedTraceWriter")]
pub(crate) struct WriterStorage;

#[pymethods]
impl WriterStorage {
    /// An in-memory database. Options: the storage options plus
    /// ``max_batch_ops``, ``queue_capacity``, ``queue_capacity_bytes``,
    /// ``max_op_bytes``, ``linger``, ``close_timeout``, ``flush_timeout``,
    /// ``enqueue_timeout``, ``overflow``.
    #[staticmethod]
    #[pyo3(signature = (**opts))]
    fn memory(py: Python<'_>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Self>> {
        open_writer(py, Target::Memory, opts)
    }

    /// A local database file (WAL by default).
    #[staticmethod]
    #[pyo3(signature = (path, **opts))]
    fn file(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_writer(py, Target::File(path_arg(path)?), opts)
    }

    /// A remote libsql server. ``auth_token=""`` means no token; ``None``
    /// takes it from the environment.
    #[staticmethod]
    #[pyo3(signature = (url, auth_token=Some(String::new()), **opts))]
    fn turso(
        py: Python<'_>,
        url: String,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_writer(py, Target::Url(url, auth_token), opts)
    }

    /// Picks the kind from the URL. ``auth_token=None`` takes it from the
    /// environment.
    #[staticmethod]
    #[pyo3(signature = (url, auth_token=None, **opts))]
    fn open(
        py: Python<'_>,
        url: &Bound<'_, PyAny>,
        auth_token: Option<String>,
        opts: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<Self>> {
        open_writer(py, Target::Url(path_arg(url)?, auth_token), opts)
    }

    /// The database named by the environment, as ``LibsqlTraceStorage.from_env``.
    #[staticmethod]
    #[pyo3(signature = (**opts))]
    fn from_env(py: Python<'_>, opts: Option<&Bound<'_, PyDict>>) -> PyResult<Py<Self>> {
        open_writer(py, Target::Env, opts)
    }

    /// A snapshot of the counters: ``enqueued``, ``committed``, ``rejected``,
    /// ``failed``, ``batches``, ``queue_depth`` and more.
    fn stats<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let d = PyDict::new(py);
        if let Some(w) = slf.as_super().get().backend.writer() {
            let s = w.stats();
            for (k, v) in [
                ("enqueued", s.enqueued),
                ("committed", s.committed),
                ("rejected", s.rejected),
                ("failed", s.failed),
                ("batches", s.batches),
                ("queue_depth", s.queue_depth),
                ("queue_bytes", s.queue_bytes),
                ("retries", s.retries),
                ("spilled", s.spilled),
                ("dead_letters", s.dead_letters),
                ("foreign_sqlite", s.foreign_sqlite),
                ("max_batch_ops", s.max_batch_ops),
                ("commit_micros_total", s.commit_micros_total),
                ("commit_micros_max", s.commit_micros_max),
                ("id_leases", s.id_leases),
                ("lease_waits", s.lease_waits),
            ] {
                d.set_item(k, v)?;
            }
            d.set_item("mean_batch_ops", s.mean_batch_ops())?;
        }
        Ok(d)
    }

    /// The most recent write errors, oldest first.
    fn recent_errors(slf: &Bound<'_, Self>) -> Vec<String> {
        slf.as_super()
            .get()
            .backend
            .writer()
            .map(|w| w.recent_errors())
            .unwrap_or_default()
    }

    /// The writer's name: the ``writer`` label of its metrics (the ``name``
    /// option, or the database file's name, ``:memory:`` or a server's host).
    #[getter]
    fn name(slf: &Bound<'_, Self>) -> String {
        slf.as_super()
            .get()
            .backend
            .writer()
            .map(|w| w.name())
            .unwrap_or_default()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> String {
        match slf.as_super().get().backend.writer() {
            Some(w) => format!("BufferedTraceWriter({:?})", w.stats()),
            None => "BufferedTraceWriter(?)".into(),
        }
    }
}

/// Registers the classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Storage>()?;
    m.add_class::<PlainStorage>()?;
    m.add_class::<WriterStorage>()?;
    m.add_function(pyo3::wrap_pyfunction!(_close_open_writers, m)?)?;
    Ok(())
}
