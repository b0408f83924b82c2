//! A fast path in front of pythonize's deserializer for the shapes that
//! trace dicts are made of: `dict`, `list`, `tuple`, `str`, `int`, `float`,
//! `bool` and `None`.
//!
//! pythonize handles every value correctly, but for each dict it first looks
//! for a dataclass (`getattr(obj, "__dataclass_fields__")`, which raises and
//! catches an `AttributeError` per dict) and copies the keys and values into
//! two lists. On a 1.5 KB event, with a dozen nested dicts, that was most of
//! the conversion time. Here a dict is walked in place; anything that is not
//! one of the shapes above (a dataclass, a `Mapping`, a set, bytes, a big
//! int) is handed to pythonize's `Depythonizer`, so the accepted inputs and
//! the error messages stay pythonize's.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pythonize::{Depythonizer, PythonizeError};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::Deserializer;

type Result<T> = std::result::Result<T, PythonizeError>;

/// `T` from a Python object.
pub(crate) fn from_py<T: DeserializeOwned>(obj: &Bound<'_, PyAny>) -> Result<T> {
    T::deserialize(Fast(obj))
}

/// The deserializer: a borrowed object.
#[derive(Clone, Copy)]
struct Fast<'a, 'py>(&'a Bound<'py, PyAny>);

/// Hands the call to pythonize.
macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        (&mut Depythonizer::from_object($self.0)).$method($($arg),*)
    };
}

macro_rules! delegate_all {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            delegate!(self.$method(visitor))
        }
    )*};
}

fn visit_str<'de, V: Visitor<'de>>(s: &Bound<'_, PyString>, visitor: V) -> Result<V::Value> {
    visitor.visit_str(&s.to_cow()?)
}

impl<'de> Deserializer<'de> for Fast<'_, '_> {
    type Error = PythonizeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let obj = self.0;
        if obj.is_none() {
            visitor.visit_unit()
        } else if let Ok(s) = obj.cast_exact::<PyString>() {
            visit_str(s, visitor)
        } else if let Ok(d) = obj.cast_exact::<PyDict>() {
            visitor.visit_map(DictAccess::new(d))
        } else if let Ok(l) = obj.cast_exact::<PyList>() {
            visitor.visit_seq(SeqAccess::list(l))
        } else if let Ok(b) = obj.cast_exact::<PyBool>() {
            visitor.visit_bool(b.is_true())
        } else if let Ok(f) = obj.cast_exact::<PyFloat>() {
            visitor.visit_f64(f.value())
        } else if obj.is_exact_instance_of::<PyInt>() {
            match obj.extract::<i64>() {
                Ok(i) => visitor.visit_i64(i),
                Err(_) => delegate!(self.deserialize_any(visitor)),
            }
        } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
            visitor.visit_seq(SeqAccess::tuple(t))
        } else {
            delegate!(self.deserialize_any(visitor))
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.cast_exact::<PyString>() {
            Ok(s) => visit_str(s, visitor),
            Err(_) => delegate!(self.deserialize_str(visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.cast_exact::<PyString>() {
            Ok(s) => visit_str(s, visitor),
            Err(_) => delegate!(self.deserialize_identifier(visitor)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.cast_exact::<PyFloat>() {
            Ok(f) => visitor.visit_f64(f.value()),
            Err(_) => delegate!(self.deserialize_f64(visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.0.is_none() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if let Ok(l) = self.0.cast_exact::<PyList>() {
            visitor.visit_seq(SeqAccess::list(l))
        } else if let Ok(t) = self.0.cast_exact::<PyTuple>() {
            visitor.visit_seq(SeqAccess::tuple(t))
        } else {
            delegate!(self.deserialize_seq(visitor))
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.0.cast_exact::<PyDict>() {
            Ok(d) => visitor.visit_map(DictAccess::new(d)),
            Err(_) => delegate!(self.deserialize_map(visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        delegate!(self.deserialize_tuple(len, visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        delegate!(self.deserialize_tuple_struct(name, len, visitor))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        delegate!(self.deserialize_unit_struct(name, visitor))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        delegate!(self.deserialize_enum(name, variants, visitor))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    delegate_all!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_char,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit
    );
}

/// A dict, walked in place.
struct DictAccess<'py> {
    iter: pyo3::types::dict::BoundDictIterator<'py>,
    value: Option<Bound<'py, PyAny>>,
}

impl<'py> DictAccess<'py> {
    fn new(d: &Bound<'py, PyDict>) -> Self {
        DictAccess {
            iter: d.iter(),
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for DictAccess<'_> {
    type Error = PythonizeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                if !k.is_instance_of::<PyString>() {
                    return Err(de::Error::custom("dict keys must be str"));
                }
                seed.deserialize(Fast(&k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        match self.value.take() {
            Some(v) => seed.deserialize(Fast(&v)),
            None => Err(de::Error::custom(
                "a dict value was asked for before its key",
            )),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// A list or a tuple.
enum SeqAccess<'a, 'py> {
    List(&'a Bound<'py, PyList>, usize),
    Tuple(&'a Bound<'py, PyTuple>, usize),
}

impl<'a, 'py> SeqAccess<'a, 'py> {
    fn list(l: &'a Bound<'py, PyList>) -> Self {
        SeqAccess::List(l, 0)
    }

    fn tuple(t: &'a Bound<'py, PyTuple>) -> Self {
        SeqAccess::Tuple(t, 0)
    }
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, '_> {
    type Error = PythonizeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let item = match self {
            SeqAccess::List(l, i) => {
                // The list may shrink while it is read: stop at its end.
                if *i >= l.len() {
                    return Ok(None);
                }
                *i += 1;
                l.get_item(*i - 1)?
            }
            SeqAccess::Tuple(t, i) => {
                if *i >= t.len() {
                    return Ok(None);
                }
                *i += 1;
                t.get_item(*i - 1)?
            }
        };
        seed.deserialize(Fast(&item)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match self {
            SeqAccess::List(l, i) => l.len().saturating_sub(*i),
            SeqAccess::Tuple(t, i) => t.len().saturating_sub(*i),
        })
    }
}
