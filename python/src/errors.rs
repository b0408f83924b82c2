//! The exception classes: one per `TracingError` variant, under
//! `TraceWriterError`, built at import time so that some can also subclass a
//! builtin (`ValueError`, `TimeoutError`).

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use trace_writer::TracingError;

/// The classes, created once per interpreter.
pub(crate) struct Classes {
    pub(crate) base: Py<PyType>,
    database: Py<PyType>,
    no_active_session: Py<PyType>,
    no_active_timestep: Py<PyType>,
    session_already_active: Py<PyType>,
    invalid_state: Py<PyType>,
    serialization: Py<PyType>,
    not_initialized: Py<PyType>,
    internal: Py<PyType>,
    writer_closed: Py<PyType>,
    queue_full: Py<PyType>,
    pub(crate) invalid_input: Py<PyType>,
    write_failed: Py<PyType>,
    timeout: Py<PyType>,
    spilled: Py<PyType>,
    close_failed: Py<PyType>,
    halted: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

/// `type(name, bases, {...})`, so that a class may have two bases.
fn class<'py>(
    py: Python<'py>,
    name: &str,
    doc: &str,
    bases: &[&Bound<'py, PyType>],
) -> PyResult<Py<PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "trace_writer")?;
    ns.set_item("__doc__", doc)?;
    let bases = PyTuple::new(py, bases)?;
    let cls = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(cls.cast_into::<PyType>()?.unbind())
}

/// The exception classes, creating them on first use.
pub(crate) fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let exception = py.get_type::<pyo3::exceptions::PyException>();
        let base = class(
            py,
            "TraceWriterError",
            "Base class of every error raised by trace_writer.",
            &[&exception],
        )?;
        let b = base.bind(py).clone();
        let sub = |name: &str, doc: &str| class(py, name, doc, &[&b]);
        // The original binding raised ValueError for every error: the
        // state errors stay ValueErrors, so `except ValueError:` still
        // catches them.
        let value_error = py.get_type::<PyValueError>();
        let state = |name: &str, doc: &str| class(py, name, doc, &[&b, &value_error]);
        Ok(Classes {
            database: sub(
                "DatabaseError",
                "The database refused or failed an operation.",
            )?,
            no_active_session: state(
                "NoActiveSessionError",
                "A tracer call needed an open session (also a ValueError).",
            )?,
            no_active_timestep: state(
                "NoActiveTimestepError",
                "A tracer call needed an open timestep (also a ValueError).",
            )?,
            session_already_active: state(
                "SessionAlreadyActiveError",
                "start_session() was called while a session was open (also a ValueError).",
            )?,
            invalid_state: state(
                "InvalidStateError",
                "The call does not fit the current state (also a ValueError).",
            )?,
            serialization: sub(
                "SerializationError",
                "A value could not be serialized or parsed.",
            )?,
            not_initialized: state(
                "NotInitializedError",
                "The storage was closed (LibsqlTraceStorage) or never initialized (also a ValueError).",
            )?,
            internal: sub(
                "InternalError",
                "A bug or an unexpected condition inside trace_writer.",
            )?,
            writer_closed: sub(
                "WriterClosedError",
                "The writer was closed, or its background thread is gone.",
            )?,
            queue_full: sub(
                "QueueFullError",
                "The writer's queue was full and overflow=\"reject\" is set.",
            )?,
            invalid_input: class(
                py,
                "InvalidInputError",
                "Bad input (a malformed dict, a bad option), caught before anything was \
                 queued. The message names the field.",
                &[&b, &py.get_type::<PyValueError>()],
            )?,
            write_failed: sub(
                "WriteFailedError",
                "Some accepted writes could not be written since the last flush.\n\n\
                 Attributes: count (int), first_cause (str).",
            )?,
            timeout: class(
                py,
                "TimeoutError",
                "A wait ran past its deadline; nothing accepted was dropped.",
                &[&b, &py.get_type::<PyTimeoutError>()],
            )?,
            spilled: sub(
                "SpilledError",
                "close() ran out of time and wrote the rest to a spill file.\n\n\
                 Attributes: path (str), count (int).",
            )?,
            close_failed: sub(
                "CloseFailedError",
                "close() could neither commit nor spill some writes.\n\n\
                 Attributes: count (int), cause (str).",
            )?,
            halted: sub(
                "HaltedError",
                "An error no retry can fix (a missing or read-only table, a corrupt file, \
                 an expired token) halted the writer: the failed batch and everything \
                 after it are in the spill file, and write calls fail fast. Close the \
                 writer, fix the cause, replay the spill file and open a new writer.\n\n\
                 Attributes: cause (str), path (str), count (int).",
            )?,
            base,
        })
    })
}

impl Classes {
    /// Every class with its Python name, for the module's namespace.
    pub(crate) fn all(&self) -> [&Py<PyType>; 17] {
        [
            &self.base,
            &self.database,
            &self.no_active_session,
            &self.no_active_timestep,
            &self.session_already_active,
            &self.invalid_state,
            &self.serialization,
            &self.not_initialized,
            &self.internal,
            &self.writer_closed,
            &self.queue_full,
            &self.invalid_input,
            &self.write_failed,
            &self.timeout,
            &self.spilled,
            &self.close_failed,
            &self.halted,
        ]
    }
}

/// An instance of `cls` with `message`, and attributes set on it.
fn instance(
    py: Python<'_>,
    cls: &Py<PyType>,
    message: String,
    attrs: &[(&str, Bound<'_, PyAny>)],
) -> PyErr {
    match cls.bind(py).call1((message,)) {
        Ok(exc) => {
            for (name, value) in attrs {
                if let Err(e) = exc.setattr(*name, value) {
                    return e;
                }
            }
            PyErr::from_value(exc)
        }
        Err(e) => e,
    }
}

/// The Python exception for a crate error.
pub(crate) fn to_py(py: Python<'_>, err: TracingError) -> PyErr {
    let c = match classes(py) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let message = err.to_string();
    let int = |n: u64| {
        let Ok(v) = n.into_pyobject(py);
        v.into_any()
    };
    let text = |s: &str| pyo3::types::PyString::new(py, s).into_any();
    match err {
        TracingError::Database(_) => instance(py, &c.database, message, &[]),
        TracingError::NoActiveSession => instance(py, &c.no_active_session, message, &[]),
        TracingError::NoActiveTimestep => instance(py, &c.no_active_timestep, message, &[]),
        TracingError::SessionAlreadyActive(_) => {
            instance(py, &c.session_already_active, message, &[])
        }
        TracingError::InvalidState(_) => instance(py, &c.invalid_state, message, &[]),
        TracingError::Serialization(_) => instance(py, &c.serialization, message, &[]),
        TracingError::NotInitialized => instance(py, &c.not_initialized, message, &[]),
        TracingError::Internal(_) => instance(py, &c.internal, message, &[]),
        TracingError::WriterClosed => instance(py, &c.writer_closed, message, &[]),
        TracingError::QueueFull => instance(py, &c.queue_full, message, &[]),
        TracingError::InvalidInput(_) => instance(py, &c.invalid_input, message, &[]),
        TracingError::WriteFailed {
            failed,
            first_cause,
        } => instance(
            py,
            &c.write_failed,
            message,
            &[("count", int(failed)), ("first_cause", text(&first_cause))],
        ),
        TracingError::Timeout(_) => instance(py, &c.timeout, message, &[]),
        TracingError::Spilled { path, count } => instance(
            py,
            &c.spilled,
            message,
            &[
                ("path", text(&path.to_string_lossy())),
                ("count", int(count as u64)),
            ],
        ),
        TracingError::CloseFailed { count, cause } => instance(
            py,
            &c.close_failed,
            message,
            &[("count", int(count as u64)), ("cause", text(&cause))],
        ),
        TracingError::Halted {
            cause,
            path,
            spilled,
        } => instance(
            py,
            &c.halted,
            message,
            &[
                ("cause", text(&cause)),
                ("path", text(&path.to_string_lossy())),
                ("count", int(spilled as u64)),
            ],
        ),
        // A variant added to the crate later: the base class until it gets
        // its own.
        _ => instance(py, &c.base, message, &[]),
    }
}

/// `to_py` for `map_err`, attaching to the interpreter if needed.
pub(crate) fn err(err: TracingError) -> PyErr {
    Python::attach(|py| to_py(py, err))
}

/// `InvalidInputError` with `message` (prefixed "invalid input: ").
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    err(TracingError::InvalidInput(message.into()))
}

/// Leaving a `with` block on `exc`: keep `exc` as the exception that
/// propagates, and chain the error from closing to it as its `__context__`
/// (keeping whatever context `exc` had under the closing error).
pub(crate) fn chain_to(py: Python<'_>, exc: &Bound<'_, PyAny>, closing: PyErr) -> PyResult<()> {
    let closing = closing.into_value(py);
    let closing = closing.bind(py);
    let previous = exc.getattr("__context__")?;
    if !previous.is_none() && closing.getattr("__context__")?.is_none() {
        closing.setattr("__context__", previous)?;
    }
    exc.setattr("__context__", closing)
}
