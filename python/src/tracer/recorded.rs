//! The tracer's results as Python objects.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use trace_writer::tracer::{HistorySlot, RecordedSession};
use trace_writer::TracingError;

use crate::convert;
use crate::errors::err;

/// A recorded session as a trace dict, its histories sharing the steps'
/// dicts (each record is converted once).
pub(super) fn recorded_to_py(py: Python<'_>, rec: &RecordedSession) -> PyResult<Py<PyAny>> {
    let trace = convert::to_py(py, &rec.trace)?;
    let d = trace.bind(py).cast::<PyDict>()?;
    let steps = d
        .get_item("session_time_steps")?
        .ok_or_else(|| err(TracingError::Internal("no session_time_steps".into())))?;
    let list =
        |slots: &[HistorySlot], field: &str, loose: &dyn Fn(usize) -> PyResult<Py<PyAny>>| {
            let mut items = Vec::with_capacity(slots.len());
            for slot in slots {
                items.push(match *slot {
                    HistorySlot::Step { step, index } => steps
                        .get_item(step)?
                        .get_item(field)?
                        .get_item(index)?
                        .unbind(),
                    HistorySlot::Loose(i) => loose(i)?,
                });
            }
            PyList::new(py, items)
        };
    let events = list(&rec.event_order, "events", &|i| {
        convert::to_py(py, &rec.loose_events[i])
    })?;
    let messages = list(&rec.message_order, "markov_blanket_messages", &|i| {
        convert::to_py(py, &rec.loose_messages[i])
    })?;
    d.set_item("event_history", events)?;
    d.set_item("markov_blanket_message_history", messages)?;
    Ok(trace)
}

/// A new row's id, or `None` (``auto_save=False``).
pub(super) fn int_or_none(py: Python<'_>, id: Option<i64>) -> PyResult<Py<PyAny>> {
    Ok(match id {
        Some(id) => id.into_pyobject(py)?.into_any().unbind(),
        None => py.None(),
    })
}
