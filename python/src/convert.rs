//! Conversions between Python objects and the crate's models.
//!
//! Dicts go straight to the models through serde (pythonize), with no JSON
//! text in between. Only when that fails does a slow path run: it rebuilds
//! the dict as JSON, turning `datetime` objects into RFC 3339 strings (or
//! Unix seconds for `event_time`), and tries again; if it still fails, it
//! finds the field at fault for the error message.

use chrono::{DateTime, SecondsFormat, Utc};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMapping, PySet, PyString, PyTuple,
    PyType,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use trace_writer::{
    BaseEventFields, EnvironmentEvent, EventType, LMCAISEvent, MarkovBlanketMessage, QueryParams,
    RuntimeEvent, TimeRecord, TracingEvent, MAX_NESTING_DEPTH, UNTAGGED_EVENT,
};

use crate::errors::invalid;
use crate::fastde::Shape;

/// `datetime.datetime` and `datetime.timezone.utc`.
struct DateTimeTypes {
    datetime: Py<PyType>,
    utc: Py<PyAny>,
}

static DATETIME: PyOnceLock<DateTimeTypes> = PyOnceLock::new();

fn datetime_types(py: Python<'_>) -> PyResult<&DateTimeTypes> {
    DATETIME.get_or_try_init(py, || {
        let m = py.import("datetime")?;
        Ok(DateTimeTypes {
            datetime: m.getattr("datetime")?.cast_into::<PyType>()?.unbind(),
            utc: m.getattr("timezone")?.getattr("utc")?.unbind(),
        })
    })
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A `datetime` as an aware UTC datetime (naive means UTC), or `None` if
/// `obj` is not a `datetime`.
fn as_utc_datetime<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let types = datetime_types(py)?;
    if !obj.is_instance(types.datetime.bind(py))? {
        return Ok(None);
    }
    let utc = types.utc.bind(py);
    let aware = if obj.call_method0("utcoffset")?.is_none() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("tzinfo", utc)?;
        obj.call_method("replace", (), Some(&kwargs))?
    } else {
        obj.call_method1("astimezone", (utc,))?
    };
    Ok(Some(aware))
}

fn parse_time(what: &str, text: &str) -> PyResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| invalid(format!("{what}: not an RFC 3339 time ({e}): {text:?}")))
}

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

/// A Python value as JSON, for the slow path and for free-form values
/// (metadata, query parameters). `datetime`s become RFC 3339 strings, or
/// Unix seconds under an `event_time` key.
///
/// Dataclass instances convert field by field and objects with `to_dict()`
/// through its result. A value nested deeper than
/// [`MAX_NESTING_DEPTH`] or containing itself raises `InvalidInputError`
/// naming where.
pub(crate) fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    to_json_at(obj, &mut Walk::default(), false)
}

/// Where the slow path is: the path from the root, and the containers on
/// it (their addresses), to tell a cycle from a deep value.
#[derive(Default)]
struct Walk {
    path: Vec<Seg>,
    open: Vec<usize>,
}

impl Walk {
    /// Enters the container `obj`.
    fn enter(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let id = obj.as_ptr() as usize;
        if self.open.contains(&id) {
            return Err(invalid(format!(
                "`{}`: the value contains itself (a cycle)",
                self.at()
            )));
        }
        if self.open.len() >= MAX_NESTING_DEPTH {
            return Err(invalid(format!(
                "`{}`: nested deeper than {MAX_NESTING_DEPTH} levels",
                self.at()
            )));
        }
        self.open.push(id);
        Ok(())
    }

    fn leave(&mut self) {
        self.open.pop();
    }

    fn at(&self) -> String {
        let p = path_text(&self.path);
        if p.is_empty() {
            "(top level)".into()
        } else {
            p
        }
    }
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn to_json_at(obj: &Bound<'_, PyAny>, walk: &mut Walk, seconds: bool) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(invalid(format!(
            "`{}`: integer {obj} does not fit in 64 bits",
            walk.at()
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        // NaN and infinities have no JSON form; null makes serde say
        // "expected f64", which names the field.
        return Ok(serde_json::Number::from_f64(f.value()).map_or(Value::Null, Value::Number));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        walk.enter(obj)?;
        let mut map = Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            let key = json_key(&k, walk)?;
            let secs = key == "event_time";
            walk.path.push(Seg::Key(key.clone()));
            let value = to_json_at(&v, walk, secs)?;
            walk.path.pop();
            map.insert(key, value);
        }
        walk.leave();
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
    {
        walk.enter(obj)?;
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            walk.path.push(Seg::Index(i));
            items.push(to_json_at(&item?, walk, false)?);
            walk.path.pop();
        }
        walk.leave();
        return Ok(Value::Array(items));
    }
    if let Some(aware) = as_utc_datetime(obj)? {
        if seconds {
            let secs: f64 = aware.call_method0("timestamp")?.extract()?;
            return Ok(serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number));
        }
        let text: String = aware.call_method0("isoformat")?.extract()?;
        let t = parse_time(&walk.at(), &text)?;
        return Ok(Value::String(
            t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        ));
    }
    match crate::fastde::shape(obj)? {
        Shape::ToDict => {
            walk.enter(obj)?;
            let d = obj.call_method0("to_dict")?;
            let v = to_json_at(&d, walk, seconds);
            walk.leave();
            return v;
        }
        Shape::Dataclass(fields) => {
            walk.enter(obj)?;
            let mut map = Map::with_capacity(fields.len());
            for name in fields.iter() {
                let name = name.bind(obj.py());
                let key = name.to_cow()?.into_owned();
                let secs = key == "event_time";
                let v = obj.getattr(name)?;
                walk.path.push(Seg::Key(key.clone()));
                let value = to_json_at(&v, walk, secs)?;
                walk.path.pop();
                map.insert(key, value);
            }
            walk.leave();
            return Ok(Value::Object(map));
        }
        Shape::Other => {}
    }
    if obj.cast::<PyMapping>().is_ok() {
        walk.enter(obj)?;
        let d = PyDict::new(obj.py());
        d.call_method1("update", (obj,))?;
        let v = to_json_at(d.as_any(), walk, seconds);
        walk.leave();
        return v;
    }
    Err(invalid(format!(
        "`{}`: unsupported type {}",
        walk.at(),
        type_name(obj)
    )))
}

fn json_key(k: &Bound<'_, PyAny>, walk: &Walk) -> PyResult<String> {
    match k.cast::<PyString>() {
        Ok(s) => Ok(s.to_cow()?.into_owned()),
        Err(_) => Err(invalid(format!(
            "`{}`: dict keys must be str, not {}",
            walk.at(),
            type_name(k)
        ))),
    }
}

/// A step in the path of the value being converted (for messages about
/// values that have no JSON form).
enum Seg {
    Key(String),
    Index(usize),
}

/// `T` from JSON, with the path to the field at fault on failure; `None`
/// as the path when serde could not track it (inside a flattened or tagged
/// part, which serde buffers).
fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != "." && path != "?").then_some(path);
        (path, e.into_inner().to_string())
    })
}

fn bad_input(what: &str, path: Option<String>, message: String) -> PyErr {
    match path {
        Some(p) => invalid(format!("{what} field `{p}`: {message}")),
        None => invalid(format!("{what}: {message}")),
    }
}

/// The slow path: JSON with datetimes converted, then serde; on failure an
/// `InvalidInputError` naming the field.
fn slow<T: DeserializeOwned>(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    let value = to_json(obj)?;
    from_json::<T>(&value).map_err(|(path, message)| bad_input(what, path, message))
}

/// The slow path of an event: the tag (or the kind inferred from the
/// fields, as the original binding did), then the variant's own fields,
/// then the flattened base fields, so that the message names the field.
fn slow_event(obj: &Bound<'_, PyAny>) -> PyResult<TracingEvent> {
    const WHAT: &str = "event";
    let mut value = to_json(obj)?;
    let tag = match &value {
        Value::Object(map) => match map.get("event_type") {
            Some(tag) => tag.as_str().map(str::to_owned),
            None => Some(
                EventType::infer(|k| map.contains_key(k))
                    .ok_or_else(|| {
                        bad_input(WHAT, Some("event_type".into()), UNTAGGED_EVENT.into())
                    })?
                    .as_str()
                    .to_owned(),
            ),
        },
        _ => None,
    };
    if let (Value::Object(map), Some(tag)) = (&mut value, &tag) {
        map.insert("event_type".into(), Value::from(tag.as_str()));
    }
    let variant = match tag.as_deref() {
        Some("cais") => from_json::<LMCAISEvent>(&value).map(TracingEvent::Cais),
        Some("environment") => from_json::<EnvironmentEvent>(&value).map(TracingEvent::Environment),
        Some("runtime") => from_json::<RuntimeEvent>(&value).map(TracingEvent::Runtime),
        _ => {
            return from_json::<TracingEvent>(&value)
                .map_err(|(_, message)| bad_input(WHAT, Some("event_type".into()), message))
        }
    };
    match variant {
        Ok(e) => Ok(e),
        Err((Some(path), message)) => Err(bad_input(WHAT, Some(path), message)),
        Err((None, message)) => match from_json::<BaseEventFields>(&value) {
            Err((path, base_message)) => Err(bad_input(WHAT, path, base_message)),
            Ok(_) => Err(bad_input(WHAT, None, message)),
        },
    }
}

/// A payload argument: a dict (or other mapping), a dataclass instance, or
/// an object with `to_dict()`; anything else is a `TypeError`.
fn require_payload(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    if obj.is_instance_of::<PyDict>()
        || !matches!(crate::fastde::shape(obj)?, Shape::Other)
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
fn event_kind(obj: &Bound<'_, PyAny>) -> PyResult<Option<EventType>> {
    let tagged = |tag: Option<Bound<'_, PyAny>>, has: &dyn Fn(&str) -> bool| -> Option<EventType> {
        match tag {
            Some(tag) => match tag.cast::<PyString>().ok()?.to_cow().ok()?.as_ref() {
                "cais" => Some(EventType::Cais),
                "environment" => Some(EventType::Environment),
                "runtime" => Some(EventType::Runtime),
                _ => None,
            },
            None => EventType::infer(has),
        }
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        let tag = d.get_item("event_type")?;
        return Ok(tagged(tag, &|k| d.contains(k).unwrap_or(false)));
    }
    if let Shape::Dataclass(fields) = crate::fastde::shape(obj)? {
        let py = obj.py();
        let has = |k: &str| {
            fields
                .iter()
                .any(|f| f.bind(py).to_cow().is_ok_and(|n| n == k))
        };
        let tag = if has("event_type") {
            Some(obj.getattr("event_type")?)
        } else {
            None
        };
        return Ok(tagged(tag, &has));
    }
    Ok(None)
}

/// An event from a payload, tagged by `event_type` or of the kind the
/// original binding infers from its fields. The variant deserializes
/// directly instead of through serde's buffered tagged-enum path.
pub(crate) fn event(obj: &Bound<'_, PyAny>) -> PyResult<TracingEvent> {
    require_payload("event", obj)?;
    if let Shape::ToDict = crate::fastde::shape(obj)? {
        // As the original wrapper did: the event is what `to_dict()` gives
        // (read on the fast path only if that is a dict, so it cannot recurse).
        let d = obj.call_method0("to_dict")?;
        if d.is_instance_of::<PyDict>() {
            return event(&d);
        }
    }
    let fast = match event_kind(obj)? {
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
