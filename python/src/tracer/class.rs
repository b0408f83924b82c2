//! The `SessionTracer` class: what it holds, and how its calls run.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::PyClassInitializer;
use trace_writer::tracer::RecordedSession;
use trace_writer::{SessionTracer, TracingError};

use crate::runtime::run;
use crate::storage::{Backend, Storage, StorageCalls};

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
#[pyclass(extends = StorageCalls, frozen, module = "trace_writer", name = "SessionTracer")]
pub(crate) struct Tracer {
    /// Declared (so dropped) first: the writer clone it holds is then never
    /// the last one (see `storage::WriterHandle`).
    pub(super) tracer: Arc<SessionTracer>,
    pub(super) storage: Py<Storage>,
    backend: Backend,
    /// The last ended session, native: its trace dict is built again only
    /// when asked for (`last_trace`), so the dict `end_session` returned is
    /// freed as soon as its caller drops it.
    pub(super) last: LastSession,
}

/// The last session a tracer ended, kept native.
#[derive(Clone, Default)]
pub(super) struct LastSession(Arc<Mutex<Option<Arc<RecordedSession>>>>);

impl LastSession {
    /// Keeps `rec`, dropping the one kept before (outside the lock). A
    /// session whose dict could not be built is kept too.
    pub(super) fn keep(&self, rec: RecordedSession) {
        let old = self.lock().replace(Arc::new(rec));
        drop(old);
    }

    /// The kept session. The lock is not held while its dict is built:
    /// building it may run Python code, which may switch threads.
    pub(super) fn get(&self) -> Option<Arc<RecordedSession>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<RecordedSession>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tracer {
    /// A tracer over `storage`, with its base.
    pub(super) fn new(storage: &Bound<'_, Storage>, auto_save: bool) -> PyClassInitializer<Self> {
        let backend = storage.get().backend.clone();
        let calls = StorageCalls {
            backend: backend.clone(),
        };
        PyClassInitializer::from(calls).add_subclass(Tracer {
            tracer: Arc::new(SessionTracer::with_auto_save(backend.storage(), auto_save)),
            backend,
            storage: storage.clone().unbind(),
            last: LastSession::default(),
        })
    }

    /// Whether its storage is a writer (see `runtime::poll_now`).
    pub(super) fn is_writer(&self) -> bool {
        self.backend.is_writer()
    }

    /// Runs a call of the crate's tracer (see `runtime::run`: over the
    /// writer, it is first polled with the GIL held).
    #[inline(always)]
    pub(super) fn run<T: Send>(
        &self,
        py: Python<'_>,
        fut: impl Future<Output = Result<T, TracingError>> + Send,
    ) -> PyResult<T> {
        run(py, self.is_writer(), fut)
    }

    /// `tracer.end_session(save)`.
    pub(super) fn end(&self, py: Python<'_>, save: bool) -> PyResult<RecordedSession> {
        self.run(py, self.tracer.end_session_recorded(save))
    }

    /// The open session's id and the open step's position.
    pub(super) fn current_timestep(&self, py: Python<'_>) -> PyResult<Option<(String, usize)>> {
        self.run(py, async { Ok(self.tracer.current_timestep().await) })
    }

    pub(super) fn current_session_id(&self, py: Python<'_>) -> PyResult<Option<String>> {
        self.run(py, async { Ok(self.tracer.current_session_id().await) })
    }
}
