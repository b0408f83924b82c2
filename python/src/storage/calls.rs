//! [`StorageCalls`]: the base class of both storages and of
//! `SessionTracer`, with the calls a tracer passes through to its storage
//! (reads, flush, close, their awaitable forms, `with` and `async with`),
//! written once for all of them.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::PyBool;

use crate::convert;
use crate::errors::err;
use crate::options;
use crate::runtime::{awaitable, ready, Awaitable};
use crate::storage::backend::{aexit, exit, flush, Backend};

/// The calls that wait for the database and that a tracer passes through
/// to its storage.
///
/// Not constructed directly: it is the base of ``TraceStorage`` and
/// ``SessionTracer``.
#[pyclass(subclass, frozen, module = "trace_writer", name = "_StorageCalls")]
pub(crate) struct StorageCalls {
    pub(crate) backend: Backend,
}

#[pymethods]
impl StorageCalls {
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
    fn aflush<'py>(&self, py: Python<'py>, timeout: Option<&Bound<'py, PyAny>>) -> Awaitable<'py> {
        let limit = options::timeout(timeout)?;
        let w = self.backend.writer().cloned();
        let flushed = async move {
            match w {
                Some(w) => flush(&w, limit).await,
                None => Ok(()),
            }
        };
        awaitable(py, false, flushed, |py, ()| Ok(py.None()))
    }

    /// ``await storage.aclose()``: ``close()`` without blocking the event loop.
    fn aclose<'py>(&self, py: Python<'py>) -> Awaitable<'py> {
        let s = self.backend.storage();
        awaitable(py, false, async move { s.close().await }, |py, ()| {
            Ok(py.None())
        })
    }

    /// ``await storage.aget_session(session_id)``: ``get_session()`` without
    /// blocking the event loop.
    fn aget_session<'py>(&self, py: Python<'py>, session_id: String) -> Awaitable<'py> {
        let s = self.backend.storage();
        let trace = async move { s.get_session(&session_id).await };
        awaitable(py, false, trace, |py, trace| convert::to_py(py, &trace))
    }

    /// ``await storage.aquery(sql, params)``: ``query()`` without blocking
    /// the event loop.
    #[pyo3(signature = (sql, params=None))]
    fn aquery<'py>(
        &self,
        py: Python<'py>,
        sql: String,
        params: Option<&Bound<'py, PyAny>>,
    ) -> Awaitable<'py> {
        let params = convert::params(params)?.bind(&sql).map_err(err)?;
        let s = self.backend.storage();
        let rows = async move { s.query(&sql, params).await };
        awaitable(py, false, rows, |py, rows| convert::to_py(py, &rows))
    }

    /// ``await storage.adelete_session(session_id)``: ``delete_session()``
    /// without blocking the event loop.
    fn adelete_session<'py>(&self, py: Python<'py>, session_id: String) -> Awaitable<'py> {
        let s = self.backend.storage();
        let existed = async move { s.delete_session(&session_id).await };
        awaitable(py, false, existed, |py, existed| {
            Ok(PyBool::new(py, existed).to_owned().into_any().unbind())
        })
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
