//! Conversions between Python objects and the crate's models.
//!
//! Payloads go straight to the models through serde (`fastde`), with no
//! JSON text in between. Only when that fails does the slow path (`slow`)
//! run: it rebuilds the payload as JSON, turning `datetime` objects into
//! RFC 3339 strings (or Unix seconds for `event_time`), and tries again; if
//! it still fails, it finds the field at fault for the error message.

use chrono::{DateTime, Utc};
use pyo3::exceptions::PyTypeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyString, PyTuple};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use trace_writer::{EventType, MarkovBlanketMessage, QueryParams, TimeRecord, TracingEvent};

use crate::errors::invalid;
use crate::shape::{shape, Shape};
use crate::slow::{as_utc_datetime, parse_time, slow, slow_event, to_json, type_name};

/// A time argument: a `datetime` (naive means UTC) or an RFC 3339 string.
pub(crate) fn time(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<DateTime<Utc>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return parse_time(what, &s.to_cow()?);
    }
    match as_utc_datetime(obj)? {
        Some(aware) => {
            let text: String = aware.call_method0("isoformat")?.extract()?;
            parse_time(what, &text)
        }
        None => Err(PyTypeError::new_err(format!(
            "{what} must be a datetime or an RFC 3339 str, not {}",
            type_name(obj)
        ))),
    }
}

/// An optional time argument; `None` stays `None`.
pub(crate) fn opt_time(
    what: &str,
    obj: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<DateTime<Utc>>> {
    match obj {
        Some(o) if !o.is_none() => time(what, o).map(Some),
        _ => Ok(None),
    }
}

/// A payload argument: a dict (or other mapping), a dataclass instance, or
/// an object with `to_dict()`; anything else is a `TypeError`.
fn require_payload(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    if obj.is_instance_of::<PyDict>()
        || !matches!(shape(obj)?, Shape::Other)
        || obj.cast::<PyMapping>().is_ok()
    {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} must be a dict, a dataclass or an object with to_dict(), not {}",
            type_name(obj)
        )))
    }
}

/// A model from a payload: the fast path first, the slow path on failure.
pub(crate) fn model<T: DeserializeOwned>(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    require_payload(what, obj)?;
    match crate::fastde::from_py::<T>(obj) {
        Ok(v) => Ok(v),
        Err(_) => slow::<T>(what, obj),
    }
}

/// The kind of an event payload: its `event_type`, or the kind inferred
/// from its fields; `None` when the fast path cannot tell (the slow path
/// then decides).
fn event_kind(obj: &Bound<'_, PyAny>, shape: &Shape) -> PyResult<Option<EventType>> {
    let py = obj.py();
    let tag = intern!(py, "event_type");
    let named = |tag: &Bound<'_, PyAny>| match tag.cast::<PyString>().ok()?.to_cow().ok()?.as_ref()
    {
        "cais" => Some(EventType::Cais),
        "environment" => Some(EventType::Environment),
        "runtime" => Some(EventType::Runtime),
        _ => None,
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(match d.get_item(tag)? {
            Some(t) => named(&t),
            None => EventType::infer(|k| d.contains(k).unwrap_or(false)),
        });
    }
    match shape {
        Shape::Dataclass(class) if class.tagged => Ok(named(&obj.getattr(tag)?)),
        Shape::Dataclass(class) => Ok(class.kind),
        _ => Ok(None),
    }
}

/// An event from a payload, tagged by `event_type` or of the kind the
/// original binding infers from its fields. The variant deserializes
/// directly instead of through serde's buffered tagged-enum path.
pub(crate) fn event(obj: &Bound<'_, PyAny>) -> PyResult<TracingEvent> {
    let shape = if obj.is_instance_of::<PyDict>() {
        Shape::Other
    } else {
        require_payload("event", obj)?;
        shape(obj)?
    };
    if let Shape::ToDict = shape {
        // As the original wrapper did: the event is what `to_dict()` gives
        // (read on the fast path only if that is a dict, so it cannot recurse).
        let d = obj.call_method0("to_dict")?;
        if d.is_instance_of::<PyDict>() {
            return event(&d);
        }
    }
    let fast = match event_kind(obj, &shape)? {
        Some(EventType::Cais) => crate::fastde::from_py::<crate::flat::Cais>(obj)
            .ok()
            .map(|e| TracingEvent::Cais(e.into())),
        Some(EventType::Environment) => crate::fastde::from_py::<crate::flat::Environment>(obj)
            .ok()
            .map(|e| TracingEvent::Environment(e.into())),
        Some(EventType::Runtime) => crate::fastde::from_py::<crate::flat::Runtime>(obj)
            .ok()
            .map(|e| TracingEvent::Runtime(e.into())),
        None => None,
    };
    match fast {
        Some(e) => Ok(e),
        None => slow_event(obj),
    }
}

/// A message from a payload; a dict without `time_record` means now.
pub(crate) fn message(obj: &Bound<'_, PyAny>) -> PyResult<MarkovBlanketMessage> {
    const WHAT: &str = "message";
    require_payload(WHAT, obj)?;
    if let Ok(d) = obj.cast::<PyDict>() {
        if !d.contains("time_record")? {
            let copy = d.copy()?;
            copy.set_item(
                "time_record",
                crate::fastser::to_py(obj.py(), &TimeRecord::now())?,
            )?;
            return model(WHAT, copy.as_any());
        }
    }
    model(WHAT, obj)
}

/// A free-form JSON value, through the fast path, else the slow one.
fn json_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    match crate::fastde::from_py::<Value>(obj) {
        Ok(v) => Ok(v),
        Err(_) => to_json(obj),
    }
}

/// A free-form JSON object argument (metadata); `None` is `{}`.
pub(crate) fn json_object(what: &str, obj: Option<&Bound<'_, PyAny>>) -> PyResult<Value> {
    match obj {
        Some(o) if !o.is_none() => {
            require_payload(what, o)?;
            match json_value(o) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err(invalid(format!("{what}: to_dict() did not return a dict"))),
                Err(e) => Err(prefixed(o.py(), what, e)),
            }
        }
        _ => Ok(Value::Object(Map::new())),
    }
}

/// `e` with `what` in front of its message, if it is an `InvalidInputError`.
fn prefixed(py: Python<'_>, what: &str, e: PyErr) -> PyErr {
    let is_invalid = crate::errors::classes(py)
        .map(|c| e.is_instance(py, c.invalid_input.bind(py)))
        .unwrap_or(false);
    if !is_invalid {
        return e;
    }
    let text = e.value(py).to_string();
    let text = text.strip_prefix("invalid input: ").unwrap_or(&text);
    invalid(format!("{what}: {text}"))
}

/// A metadata map for the tracer.
pub(crate) fn metadata(
    what: &str,
    obj: Option<&Bound<'_, PyAny>>,
) -> PyResult<std::collections::HashMap<String, Value>> {
    match json_object(what, obj)? {
        Value::Object(m) => Ok(m.into_iter().collect()),
        _ => Ok(Default::default()),
    }
}

/// Query parameters: `None`, a list or tuple (positional), or a dict
/// (named: `:name`, `@name` or `$name`, keys with or without the prefix).
pub(crate) fn params(obj: Option<&Bound<'_, PyAny>>) -> PyResult<QueryParams> {
    let Some(o) = obj.filter(|o| !o.is_none()) else {
        return Ok(QueryParams::Positional(Vec::new()));
    };
    let py = o.py();
    if let Ok(d) = o.cast::<PyDict>() {
        let mut named = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = match k.cast::<PyString>() {
                Ok(s) => s.to_cow()?.into_owned(),
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "params keys must be str, not {}",
                        type_name(&k)
                    )))
                }
            };
            let value = json_value(&v).map_err(|e| prefixed(py, &format!("params[{key:?}]"), e))?;
            named.push((key, value));
        }
        return Ok(QueryParams::Named(named));
    }
    if o.is_instance_of::<PyList>() || o.is_instance_of::<PyTuple>() {
        let mut values = Vec::new();
        for (i, item) in o.try_iter()?.enumerate() {
            values.push(json_value(&item?).map_err(|e| prefixed(py, &format!("params[{i}]"), e))?);
        }
        return Ok(QueryParams::Positional(values));
    }
    Err(PyTypeError::new_err(format!(
        "params must be a list, a tuple or a dict, not {}",
        type_name(o)
    )))
}

/// A value as Python objects (dicts, lists, str, numbers), as serde shapes it.
pub(crate) fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Py<PyAny>> {
    crate::fastser::to_py(py, value)
        .map(Bound::unbind)
        .map_err(|e| crate::errors::err(trace_writer::TracingError::Serialization(e.to_string())))
}
