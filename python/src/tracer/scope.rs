//! The context managers of ``tracer.session()`` and ``tracer.timestep()``:
//! each starts its session or step on entry and, on exit, ends it if it is
//! still the open one.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::PyClassInitializer;

use crate::convert;
use crate::storage::leave;
use crate::tracer::class::Tracer;

/// What a scope started.
enum Started {
    Nothing,
    Session(String),
    /// The session and the step's position in it.
    Step((String, usize)),
}

/// The base of both scopes: their tracer, and what they started.
#[pyclass(subclass, frozen, module = "trace_writer", name = "_Scope")]
pub(crate) struct Scope {
    tracer: Py<Tracer>,
    started: Mutex<Started>,
}

impl Scope {
    /// `scope` over `tracer`, with its base.
    pub(super) fn open<S>(tracer: &Bound<'_, Tracer>, scope: S) -> PyResult<Py<S>>
    where
        S: pyo3::PyClass<BaseType = Scope>,
    {
        let base = PyClassInitializer::from(Scope {
            tracer: tracer.clone().unbind(),
            started: Mutex::new(Started::Nothing),
        });
        Py::new(tracer.py(), base.add_subclass(scope))
    }

    fn started(&self, what: Started) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }
}

#[pymethods]
impl Scope {
    /// Ends what the scope started unless it was ended inside the block. An
    /// error from ending propagates if the block succeeded, and is chained
    /// to its exception otherwise.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: &Bound<'_, PyAny>,
        exc: &Bound<'_, PyAny>,
        tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let _ = (exc_type, tb);
        let started = std::mem::replace(
            &mut *self.started.lock().unwrap_or_else(|p| p.into_inner()),
            Started::Nothing,
        );
        let tracer = self.tracer.get();
        let result = match started {
            Started::Session(sid)
                if tracer.current_session_id(py)?.as_deref() == Some(sid.as_str()) =>
            {
                tracer.end(py, true).map(drop)
            }
            Started::Step(step) if tracer.current_timestep(py)?.as_ref() == Some(&step) => {
                tracer.run(py, tracer.tracer.end_timestep())
            }
            _ => Ok(()),
        };
        leave(py, Some(exc), result)
    }
}

/// The context manager of ``tracer.session()``.
#[pyclass(extends = Scope, frozen, module = "trace_writer", name = "_SessionScope")]
pub(crate) struct SessionScope {
    pub(super) session_id: Option<String>,
    pub(super) metadata: Option<Py<PyAny>>,
}

#[pymethods]
impl SessionScope {
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let (py, this, base) = (slf.py(), slf.get(), slf.as_super().get());
        let tracer = base.tracer.get();
        let meta = this.metadata.as_ref().map(|m| m.bind(py));
        let meta = convert::metadata("metadata", meta)?;
        let sid = tracer.run(
            py,
            tracer
                .tracer
                .start_session(this.session_id.as_deref(), meta),
        )?;
        base.started(Started::Session(sid.clone()));
        Ok(sid)
    }
}

/// The context manager of ``tracer.timestep()``.
#[pyclass(extends = Scope, frozen, module = "trace_writer", name = "_TimestepScope")]
pub(crate) struct TimestepScope {
    pub(super) step_id: String,
    pub(super) turn_number: Option<i32>,
    pub(super) metadata: Option<Py<PyAny>>,
}

#[pymethods]
impl TimestepScope {
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let (py, this, base) = (slf.py(), slf.get(), slf.as_super().get());
        let tracer = base.tracer.get();
        let meta = this.metadata.as_ref().map(|m| m.bind(py));
        let meta = convert::metadata("metadata", meta)?;
        let step = tracer
            .tracer
            .start_timestep(&this.step_id, this.turn_number, meta);
        tracer.run(py, step)?;
        if let Some(step) = tracer.current_timestep(py)? {
            base.started(Started::Step(step));
        }
        Ok(())
    }
}
