//! [`WriterHandle`]: the one owner of a writer's clones in Python, and the
//! registry that closes the writers still open when the interpreter exits.

use std::sync::{Arc, Mutex, Weak};

use pyo3::prelude::*;
use trace_writer::{BufferedTraceWriter, TraceStorage, TracingError};

use crate::runtime::wait;

/// A writer and its `dyn TraceStorage` form. The Python object and every
/// tracer over it share one `Arc`; the registry below holds only a `Weak`,
/// so a writer dropped without `close()` still drains.
///
/// Every clone of the writer that Python objects hold lives here (a
/// tracer's crate `SessionTracer` holds `storage`, and is dropped before
/// its handle), so the last one is dropped by [`WriterHandle`]'s `Drop`,
/// which releases the GIL first: dropping the last clone closes the writer
/// and blocks the dropping thread until it has committed (up to
/// `close_timeout`).
pub(crate) struct WriterHandle {
    /// Always `Some` until dropped.
    parts: Option<WriterParts>,
}

struct WriterParts {
    writer: BufferedTraceWriter,
    storage: Arc<dyn TraceStorage>,
}

/// `parts` is taken only by `drop`.
const BUG: &str = "a writer handle is used after its drop: a bug in trace_writer";

impl WriterHandle {
    /// The handle of a writer just opened, registered for the
    /// interpreter's exit.
    pub(crate) fn open(writer: BufferedTraceWriter) -> Arc<Self> {
        let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
        let handle = Arc::new(WriterHandle {
            parts: Some(WriterParts { writer, storage }),
        });
        let mut open = OPEN_WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|w| w.strong_count() > 0);
        open.push(Arc::downgrade(&handle));
        handle
    }

    fn parts(&self) -> &WriterParts {
        self.parts.as_ref().expect(BUG)
    }

    pub(crate) fn writer(&self) -> &BufferedTraceWriter {
        &self.parts().writer
    }

    pub(crate) fn storage(&self) -> &Arc<dyn TraceStorage> {
        &self.parts().storage
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

/// Flush, then close even if the flush failed. The error from closing wins
/// (a `SpilledError` says where the writes went), else the flush's (a
/// `WriteFailedError` counts the failed writes). A flush on a closed writer
/// is not an error here: closing twice is fine.
pub(crate) async fn shutdown(
    w: Option<BufferedTraceWriter>,
    s: Arc<dyn TraceStorage>,
) -> Result<(), TracingError> {
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

/// The writers opened from Python that may still be open, for the
/// interpreter's exit (see `_close_open_writers`).
static OPEN_WRITERS: Mutex<Vec<Weak<WriterHandle>>> = Mutex::new(Vec::new());

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
            .filter_map(|h| wait(shutdown(Some(h.writer().clone()), h.storage().clone())).err())
            .map(|e| e.to_string())
            .collect()
    })
}
