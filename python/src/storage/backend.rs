//! [`Backend`]: the crate storage behind a Python object, and the calls that
//! wait for it (flush, close, what leaving a `with` block does).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBool;
use trace_writer::{BufferedTraceWriter, LibsqlTraceStorage, TraceStorage, TracingError};

use crate::convert;
use crate::errors::{chain_to, err};
use crate::options;
use crate::runtime::{awaitable, run, wait};
use crate::storage::handle::{shutdown, WriterHandle};

type R<T> = Result<T, TracingError>;

/// The Rust storage behind a Python object: cheap to clone, `Send + Sync`.
///
/// Every call goes through `storage`; `kind` gives what only one backend
/// has (the writer's flush, counters and name) and which of them it is.
#[derive(Clone)]
pub(crate) struct Backend {
    /// Declared (so dropped) first: for a writer, the last clone is then
    /// dropped by [`WriterHandle`]'s `Drop`, with the GIL released.
    storage: Arc<dyn TraceStorage>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Plain(Arc<LibsqlTraceStorage>),
    Writer(Arc<WriterHandle>),
}

impl Backend {
    pub(crate) fn plain(storage: LibsqlTraceStorage) -> Self {
        let storage = Arc::new(storage);
        Backend {
            storage: storage.clone(),
            kind: Kind::Plain(storage),
        }
    }

    pub(crate) fn writer_handle(handle: Arc<WriterHandle>) -> Self {
        Backend {
            storage: handle.storage().clone(),
            kind: Kind::Writer(handle),
        }
    }

    /// The crate storage behind the backend.
    pub(crate) fn storage(&self) -> Arc<dyn TraceStorage> {
        self.storage.clone()
    }

    pub(crate) fn writer(&self) -> Option<&BufferedTraceWriter> {
        match &self.kind {
            Kind::Plain(_) => None,
            Kind::Writer(h) => Some(h.writer()),
        }
    }

    /// The plain backend, for its `repr`.
    pub(crate) fn plain_storage(&self) -> Option<&LibsqlTraceStorage> {
        match &self.kind {
            Kind::Plain(s) => Some(s),
            Kind::Writer(_) => None,
        }
    }

    /// Whether calls take the writer's fast path (see [`run`]): the
    /// writer's calls rarely wait, the plain backend's always do.
    pub(crate) fn is_writer(&self) -> bool {
        matches!(self.kind, Kind::Writer(_))
    }

    /// Raises a `RuntimeWarning` for each second SQLite library found with
    /// the database open in this process since the last call (the crate's
    /// `take_foreign_sqlite_warnings`).
    pub(crate) fn warn_foreign(&self, py: Python<'_>) -> PyResult<()> {
        let warnings = match &self.kind {
            Kind::Plain(s) => s.take_foreign_sqlite_warnings(),
            Kind::Writer(h) => h.writer().take_foreign_sqlite_warnings(),
        };
        let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
        for text in warnings {
            let text =
                std::ffi::CString::new(text.replace('\0', " ")).expect("NUL bytes were replaced");
            PyErr::warn(py, &category, &text, 1)?;
        }
        Ok(())
    }

    /// A write call of the storage (`ensure_*`, `update_*`, `insert_*`):
    /// on the writer it only queues, so it takes the fast path of [`run`].
    /// Reads and `close` wait for the database, and release the GIL at once.
    pub(crate) fn write<'a, T, F>(
        &'a self,
        py: Python<'_>,
        call: impl FnOnce(&'a dyn TraceStorage) -> F,
    ) -> PyResult<T>
    where
        T: Send,
        F: Future<Output = R<T>> + Send,
    {
        self.warn_foreign(py)?;
        run(py, self.is_writer(), call(&*self.storage))
    }

    pub(crate) fn py_get_session(&self, py: Python<'_>, sid: &str) -> PyResult<Py<PyAny>> {
        self.warn_foreign(py)?;
        let trace = run(py, false, self.storage.get_session(sid))?;
        convert::to_py(py, &trace)
    }

    pub(crate) fn py_query(
        &self,
        py: Python<'_>,
        sql: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.warn_foreign(py)?;
        let params = convert::params(params)?.bind(sql).map_err(err)?;
        let rows = run(py, false, self.storage.query(sql, params))?;
        convert::to_py(py, &rows)
    }

    pub(crate) fn py_delete_session(&self, py: Python<'_>, sid: &str) -> PyResult<bool> {
        self.warn_foreign(py)?;
        run(py, false, self.storage.delete_session(sid))
    }

    /// Waits until everything queued is committed; a no-op on the plain
    /// backend, whose calls commit before they return.
    pub(crate) fn py_flush(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.warn_foreign(py)?;
        let limit = options::timeout(timeout)?;
        let Some(w) = self.writer() else {
            return Ok(());
        };
        run(py, false, flush(w, limit))
    }

    pub(crate) fn py_close(&self, py: Python<'_>) -> PyResult<()> {
        run(py, false, self.storage.close())
    }
}

/// The writer's flush, within `limit` if one is given (else its
/// `flush_timeout`).
pub(crate) async fn flush(w: &BufferedTraceWriter, limit: Option<Duration>) -> R<()> {
    let Some(limit) = limit else {
        return w.flush().await;
    };
    tokio::time::timeout(limit, w.flush())
        .await
        .unwrap_or_else(|_| {
            Err(TracingError::Timeout(format!(
                "flush did not finish within {limit:?}; the writes stay queued"
            )))
        })
}

/// `__exit__`: close (a writer flushes first), and chain a closing error to
/// the exception in flight.
pub(crate) fn exit(
    py: Python<'_>,
    backend: &Backend,
    exc: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let (w, s) = (backend.writer().cloned(), backend.storage());
    let result = py.detach(|| wait(shutdown(w, s)));
    leave(py, exc, result.map_err(err))
}

/// Ends a `with` block with `result`, the outcome of what leaving it does:
/// an error propagates if the block succeeded, and is chained to the
/// block's exception otherwise.
pub(crate) fn leave(
    py: Python<'_>,
    exc: Option<&Bound<'_, PyAny>>,
    result: PyResult<()>,
) -> PyResult<bool> {
    match (result, exc) {
        (Ok(()), _) => Ok(false),
        (Err(e), Some(exc)) if !exc.is_none() => {
            chain_to(py, exc, e)?;
            Ok(false)
        }
        (Err(e), _) => Err(e),
    }
}

/// `__aexit__`: as [`exit`], without blocking the event loop.
pub(crate) fn aexit<'py>(
    py: Python<'py>,
    backend: &Backend,
    exc: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (w, s) = (backend.writer().cloned(), backend.storage());
    let exc = exc.map(|e| e.clone().unbind());
    let closed = async move { Ok(shutdown(w, s).await) };
    awaitable(py, false, closed, move |py, result| {
        let done = leave(py, exc.as_ref().map(|e| e.bind(py)), result.map_err(err))?;
        Ok(PyBool::new(py, done).to_owned().into_any().unbind())
    })
}
