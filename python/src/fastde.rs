//! serde's deserializer over Python objects: the fast path of every
//! conversion from Python.
//!
//! It walks `dict`, `list`, `tuple`, `str`, `int`, `float`, `bool` and
//! `None` in place, dataclass instances field by field (the fields of each
//! class are looked up once and cached), and objects with a `to_dict()`
//! method through its result, as the original wrapper did. It checks types
//! as `serde_json` checks JSON (a `bool` field takes only `bool`, a float
//! field `int` or `float`, a string field only `str`), refuses non-finite
//! floats (JSON has no form for them), and stops at
//! [`MAX_NESTING_DEPTH`](trace_writer::MAX_NESTING_DEPTH) levels, so that
//! neither a deep value nor a value that contains itself can overflow the
//! stack.
//!
//! Anything else (a `datetime`, a `set`, a `Mapping` that is not a dict, a
//! big int) fails here with a short error; the caller then runs the slow
//! path (`convert::to_json`), which converts those where it can and, where
//! it cannot, names the field at fault.

use std::borrow::Cow;
use std::rc::Rc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::Deserializer;
use trace_writer::MAX_NESTING_DEPTH;

use crate::shape::{shape, Dataclass, Shape};

/// Why the fast path gave up; the slow path finds the words for the user.
#[derive(Debug)]
pub(crate) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl From<PyErr> for Error {
    fn from(e: PyErr) -> Self {
        Error(e.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// `T` from a Python object.
pub(crate) fn from_py<T: DeserializeOwned>(obj: &Bound<'_, PyAny>) -> Result<T> {
    T::deserialize(Fast { obj, depth: 0 })
}

/// The deserializer: a borrowed object and how deep it sits.
#[derive(Clone, Copy)]
struct Fast<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    depth: usize,
}

fn fail<T>(what: &str) -> Result<T> {
    Err(Error(format!("not {what}")))
}

/// A value a `visit_*` found, or the error that says what it is not.
#[inline]
fn found<T>(value: Option<T>, what: &str) -> Result<T> {
    match value {
        Some(v) => Ok(v),
        None => fail(what),
    }
}

impl<'a, 'py> Fast<'a, 'py> {
    /// One level deeper, or an error past the limit.
    fn deeper(self) -> Result<usize> {
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(Error(format!(
                "nested deeper than {MAX_NESTING_DEPTH} levels"
            )));
        }
        Ok(self.depth + 1)
    }

    /// A map-like object: a dict, a dataclass, or the result of `to_dict()`.
    fn visit_map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<Option<V::Value>> {
        let obj = self.obj;
        if let Ok(d) = obj.cast::<PyDict>() {
            let depth = self.deeper()?;
            return visitor.visit_map(DictAccess::new(d, depth)).map(Some);
        }
        match shape(obj)? {
            Shape::Dataclass(class) => {
                let depth = self.deeper()?;
                visitor
                    .visit_map(FieldAccess {
                        obj,
                        class,
                        next: 0,
                        value: None,
                        depth,
                    })
                    .map(Some)
            }
            Shape::ToDict => {
                let depth = self.deeper()?;
                let d = obj.call_method0("to_dict")?;
                Fast { obj: &d, depth }.deserialize_any(visitor).map(Some)
            }
            Shape::Other => Ok(None),
        }
    }

    fn visit_seq<'de, V: Visitor<'de>>(self, visitor: V) -> Result<Option<V::Value>> {
        if let Ok(l) = self.obj.cast::<PyList>() {
            let depth = self.deeper()?;
            visitor.visit_seq(SeqAccess::list(l, depth)).map(Some)
        } else if let Ok(t) = self.obj.cast::<PyTuple>() {
            let depth = self.deeper()?;
            visitor.visit_seq(SeqAccess::tuple(t, depth)).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An int that is not a bool.
    fn visit_int<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let obj = self.obj;
        if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
            return fail("an int");
        }
        if let Ok(i) = obj.extract::<i64>() {
            visitor.visit_i64(i)
        } else if let Ok(u) = obj.extract::<u64>() {
            visitor.visit_u64(u)
        } else {
            fail("an int of 64 bits")
        }
    }
}

fn visit_str<'de, V: Visitor<'de>>(s: &Bound<'_, PyString>, visitor: V) -> Result<V::Value> {
    visitor.visit_str(&text(s)?)
}

/// The text of a `str`. CPython keeps an ASCII string (every identifier and
/// field name, most keys and values) as its bytes right behind the object's
/// header, which are valid UTF-8 as they stand: those are read in place,
/// without a call into the interpreter. A 1.5 KB event holds about 150
/// strings, and the call took about a fifth of its conversion's
/// instructions (callgrind). Other strings, other interpreters and the
/// stable ABI go through pyo3.
#[inline]
#[allow(unsafe_code)]
fn text<'a>(s: &'a Bound<'_, PyString>) -> Result<Cow<'a, str>> {
    #[cfg(not(any(Py_LIMITED_API, PyPy, GraalPy, Py_3_14)))]
    {
        let p = s.as_ptr();
        // SAFETY: `p` is a live `str` (the type was checked and `s` holds a
        // reference) whose text never changes. A compact ASCII string's
        // `PyUnicode_DATA` points at its `PyUnicode_GET_LENGTH` bytes, all
        // below 0x80 and so valid UTF-8, which live as long as `s`.
        unsafe {
            if pyo3::ffi::PyUnicode_IS_COMPACT_ASCII(p) != 0 {
                let len = pyo3::ffi::PyUnicode_GET_LENGTH(p) as usize;
                let data = pyo3::ffi::PyUnicode_DATA(p) as *const u8;
                let bytes = std::slice::from_raw_parts(data, len);
                return Ok(Cow::Borrowed(std::str::from_utf8_unchecked(bytes)));
            }
        }
    }
    Ok(s.to_cow()?)
}

macro_rules! ints {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.visit_int(visitor)
        }
    )*};
}

/// Methods that read the value as another method does, their other
/// arguments (names, lengths) unused: `method(arguments) => other;`.
macro_rules! forward {
    ($($method:ident($($arg:ident: $t:ty),*) => $to:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $t,)* visitor: V) -> Result<V::Value> {
            self.$to(visitor)
        }
    )*};
}

macro_rules! refuse {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value> {
            fail(stringify!($method))
        }
    )*};
}

impl<'de> Deserializer<'de> for Fast<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let obj = self.obj;
        if obj.is_none() {
            visitor.visit_unit()
        } else if let Ok(s) = obj.cast::<PyString>() {
            visit_str(s, visitor)
        } else if let Ok(b) = obj.cast_exact::<PyBool>() {
            visitor.visit_bool(b.is_true())
        } else if obj.is_instance_of::<PyInt>() {
            self.visit_int(visitor)
        } else if let Ok(f) = obj.cast::<PyFloat>() {
            self.deserialize_f64_of(f.value(), visitor)
        } else if obj.is_instance_of::<PyDict>() {
            self.deserialize_map(visitor)
        } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            self.deserialize_seq(visitor)
        } else {
            found(self.visit_map(visitor)?, "a JSON-like value")
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.obj.cast::<PyBool>() {
            Ok(b) => visitor.visit_bool(b.is_true()),
            Err(_) => fail("a bool"),
        }
    }

    ints!(
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128
    );

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.obj.cast::<PyFloat>() {
            Ok(f) => self.deserialize_f64_of(f.value(), visitor),
            Err(_) => self.visit_int(visitor),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.obj.cast::<PyString>() {
            Ok(s) => visit_str(s, visitor),
            Err(_) => fail("a str"),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.obj.is_none() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.obj.is_none() {
            visitor.visit_unit()
        } else {
            fail("None")
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        found(self.visit_seq(visitor)?, "a list")
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        found(self.visit_map(visitor)?, "a dict")
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    forward! {
        deserialize_f32() => deserialize_f64;
        deserialize_string() => deserialize_str;
        deserialize_identifier() => deserialize_str;
        deserialize_struct(_name: &'static str, _fields: &'static [&'static str]) => deserialize_map;
        deserialize_tuple(_len: usize) => deserialize_seq;
        deserialize_tuple_struct(_name: &'static str, _len: usize) => deserialize_seq;
        deserialize_unit_struct(_name: &'static str) => deserialize_unit;
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        // No input model has an externally tagged enum; the slow path (serde_json) handles one.
        fail("an enum")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    refuse!(deserialize_char, deserialize_bytes, deserialize_byte_buf);
}

impl Fast<'_, '_> {
    /// JSON has no NaN or infinity: refuse them (the slow path names the field).
    fn deserialize_f64_of<'de, V: Visitor<'de>>(self, f: f64, visitor: V) -> Result<V::Value> {
        if f.is_finite() {
            visitor.visit_f64(f)
        } else {
            fail("a finite float")
        }
    }
}

/// The value whose key a map access just gave.
fn value_after_key<'de, V: DeserializeSeed<'de>>(
    value: &mut Option<Bound<'_, PyAny>>,
    depth: usize,
    seed: V,
) -> Result<V::Value> {
    match value.take() {
        Some(v) => seed.deserialize(Fast { obj: &v, depth }),
        None => fail("a value after its key"),
    }
}

/// A dict, walked in place.
struct DictAccess<'py> {
    iter: pyo3::types::dict::BoundDictIterator<'py>,
    value: Option<Bound<'py, PyAny>>,
    depth: usize,
}

impl<'py> DictAccess<'py> {
    fn new(d: &Bound<'py, PyDict>, depth: usize) -> Self {
        DictAccess {
            iter: d.iter(),
            value: None,
            depth,
        }
    }
}

impl<'de> de::MapAccess<'de> for DictAccess<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                match k.cast::<PyString>() {
                    Ok(s) => seed
                        .deserialize(de::value::StrDeserializer::<Error>::new(&text(s)?))
                        .map(Some),
                    Err(_) => fail("a str key"),
                }
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        value_after_key(&mut self.value, self.depth, seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A dataclass instance, field by field.
struct FieldAccess<'a, 'py> {
    obj: &'a Bound<'py, PyAny>,
    class: Rc<Dataclass>,
    next: usize,
    value: Option<Bound<'py, PyAny>>,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for FieldAccess<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some(name) = self.class.fields.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let name = name.bind(self.obj.py());
        self.value = Some(self.obj.getattr(name)?);
        seed.deserialize(de::value::StrDeserializer::<Error>::new(&text(name)?))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        value_after_key(&mut self.value, self.depth, seed)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.class.fields.len() - self.next)
    }
}

/// A list or a tuple.
enum SeqAccess<'a, 'py> {
    List(&'a Bound<'py, PyList>, usize, usize),
    Tuple(&'a Bound<'py, PyTuple>, usize, usize),
}

impl<'a, 'py> SeqAccess<'a, 'py> {
    fn list(l: &'a Bound<'py, PyList>, depth: usize) -> Self {
        SeqAccess::List(l, 0, depth)
    }

    fn tuple(t: &'a Bound<'py, PyTuple>, depth: usize) -> Self {
        SeqAccess::Tuple(t, 0, depth)
    }
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let (item, depth) = match self {
            SeqAccess::List(l, i, depth) => {
                // The list may shrink while it is read: stop at its end.
                if *i >= l.len() {
                    return Ok(None);
                }
                *i += 1;
                (l.get_item(*i - 1)?, *depth)
            }
            SeqAccess::Tuple(t, i, depth) => {
                if *i >= t.len() {
                    return Ok(None);
                }
                *i += 1;
                (t.get_item(*i - 1)?, *depth)
            }
        };
        seed.deserialize(Fast { obj: &item, depth }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match self {
            SeqAccess::List(l, i, _) => l.len().saturating_sub(*i),
            SeqAccess::Tuple(t, i, _) => t.len().saturating_sub(*i),
        })
    }
}
