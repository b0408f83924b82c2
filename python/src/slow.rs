//! The slow path of every conversion from Python: any value as JSON, with
//! `datetime` objects as RFC 3339 strings (or Unix seconds under
//! `event_time`), mappings, sets and big ints converted where they can be;
//! then serde over that JSON, which names the field at fault when it fails.
//! The fast path (`fastde`) runs first; this runs only when it gives up.

use chrono::{DateTime, SecondsFormat, Utc};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMapping, PySet, PyString, PyTuple,
    PyType,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use trace_writer::{
    BaseEventFields, EnvironmentEvent, EventType, LMCAISEvent, RuntimeEvent, TracingEvent,
    MAX_NESTING_DEPTH, UNTAGGED_EVENT,
};

use crate::errors::invalid;
use crate::shape::{shape, Shape};

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

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A `datetime` as an aware UTC datetime (naive means UTC), or `None` if
/// `obj` is not a `datetime`.
pub(crate) fn as_utc_datetime<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
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

pub(crate) fn parse_time(what: &str, text: &str) -> PyResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| invalid(format!("{what}: not an RFC 3339 time ({e}): {text:?}")))
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
            member(&mut map, key, &v, walk)?;
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
    match shape(obj)? {
        Shape::ToDict => {
            walk.enter(obj)?;
            let d = obj.call_method0("to_dict")?;
            let v = to_json_at(&d, walk, seconds);
            walk.leave();
            return v;
        }
        Shape::Dataclass(class) => {
            walk.enter(obj)?;
            let mut map = Map::with_capacity(class.fields.len());
            for name in class.fields.iter() {
                let name = name.bind(obj.py());
                member(
                    &mut map,
                    name.to_cow()?.into_owned(),
                    &obj.getattr(name)?,
                    walk,
                )?;
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

/// `key: v` into `map`, converted with `key` on the path (a time under
/// `event_time` as Unix seconds).
fn member(
    map: &mut Map<String, Value>,
    key: String,
    v: &Bound<'_, PyAny>,
    walk: &mut Walk,
) -> PyResult<()> {
    let secs = key == "event_time";
    walk.path.push(Seg::Key(key.clone()));
    let value = to_json_at(v, walk, secs)?;
    walk.path.pop();
    map.insert(key, value);
    Ok(())
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
pub(crate) fn slow<T: DeserializeOwned>(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    let value = to_json(obj)?;
    from_json::<T>(&value).map_err(|(path, message)| bad_input(what, path, message))
}

/// The slow path of an event: the tag (or the kind inferred from the
/// fields, as the original binding did), then the variant's own fields,
/// then the flattened base fields, so that the message names the field.
pub(crate) fn slow_event(obj: &Bound<'_, PyAny>) -> PyResult<TracingEvent> {
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
