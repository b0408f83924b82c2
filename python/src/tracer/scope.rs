//! The context managers of ``tracer.session()`` and ``tracer.timestep()``.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::storage::leave;
use crate::tracer::Tracer;

/// The context manager of ``tracer.session()``.
#[pyclass(frozen, module = "trace_writer", name = "_SessionScope")]
pub(crate) struct SessionScope {
    pub(super) tracer: Py<Tracer>,
    pub(super) session_id: Option<String>,
    pub(super) metadata: Option<Py<PyAny>>,
    /// The session it started.
    pub(super) started: Mutex<Option<String>>,
}

#[pymethods]
impl SessionScope {
    fn __enter__(&self, py: Python<'_>) -> PyResult<String> {
        let tracer = self.tracer.get();
        let meta = self.metadata.as_ref().map(|m| m.bind(py).clone());
        let sid = tracer.start_session(py, self.session_id.clone(), meta.as_ref())?;
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(sid.clone());
        Ok(sid)
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tracer = self.tracer.get();
        let result = match started {
            // Ended already inside the block: nothing to do.
            Some(sid) if tracer.current_session_id(py)?.as_deref() == Some(sid.as_str()) => {
                tracer.end(py, true).map(drop)
            }
            _ => Ok(()),
        };
        leave(py, exc, result)
    }
}

/// The context manager of ``tracer.timestep()``.
#[pyclass(frozen, module = "trace_writer", name = "_TimestepScope")]
pub(crate) struct TimestepScope {
    pub(super) tracer: Py<Tracer>,
    pub(super) step_id: String,
    pub(super) turn_number: Option<i32>,
    pub(super) metadata: Option<Py<PyAny>>,
    /// The session and the step's index that it started.
    pub(super) started: Mutex<Option<(String, usize)>>,
}

#[pymethods]
impl TimestepScope {
    fn __enter__(&self, py: Python<'_>) -> PyResult<()> {
        let tracer = self.tracer.get();
        let meta = self.metadata.as_ref().map(|m| m.bind(py).clone());
        tracer.start_timestep(py, self.step_id.clone(), self.turn_number, meta.as_ref())?;
        let started = tracer.current_timestep(py)?;
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = started;
        Ok(())
    }

    #[pyo3(signature = (exc_type, exc, tb))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        exc: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let started = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tracer = self.tracer.get();
        let result = match started {
            Some(step) if tracer.current_timestep(py)?.as_ref() == Some(&step) => {
                tracer.run(py, tracer.tracer.end_timestep())
            }
            _ => Ok(()),
        };
        leave(py, exc, result)
    }
}
