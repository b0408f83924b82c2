//! The storage classes: `TraceStorage`, their base, and the two classes,
//! `LibsqlTraceStorage` and `BufferedTraceWriter` with what only the writer
//! has (counters, recent errors, name). The constructors and the trait's
//! methods are on `TraceStorage` (`methods.rs`).

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::storage::backend::Backend;
use crate::storage::calls::StorageCalls;

/// The methods both storage classes share: the constructors, and those of
/// the crate's `TraceStorage` trait, synchronous, with the GIL released
/// while they wait.
///
/// Not constructed directly: use `LibsqlTraceStorage` or
/// `BufferedTraceWriter`.
#[pyclass(extends = StorageCalls, subclass, frozen, module = "trace_writer", name = "TraceStorage")]
pub(crate) struct Storage {
    /// The same as the base's.
    pub(crate) backend: Backend,
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
    fn __repr__(slf: &Bound<'_, Self>) -> String {
        match slf.as_super().get().backend.plain_storage() {
            Some(s) => format!("LibsqlTraceStorage({:?})", s.config().redacted_url()),
            None => "LibsqlTraceStorage(?)".into(),
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
                ("step_loads", s.step_loads),
                ("checkpoint_failures", s.checkpoint_failures),
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
