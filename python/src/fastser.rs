//! Models to Python objects: a serde `Serializer` that builds dicts, lists,
//! str, int, float, bool and `None` directly (orjson's approach), with the
//! dict keys of the models (field names, the `event_type` tag) cached as
//! Python strings.
//!
//! pythonize gives the same objects, but makes a new `str` (decoded and
//! hashed anew) for every key of every dict; a trace of 80 events has
//! thousands of them, which made `end_session()` cost three times the
//! recording of its events.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use pyo3::BoundObject;
use pythonize::PythonizeError;
use serde::ser::{self, Serialize};

type Result<T> = std::result::Result<T, PythonizeError>;

/// Keys cached per thread; keys are short and few (the models' field
/// names), but user metadata keys pass here too, so the cache is bounded.
const KEY_CACHE_MAX: usize = 4096;
/// Longer keys are not worth caching.
const KEY_CACHE_LEN: usize = 64;

/// Slots of the field-name cache (a power of two).
const FIELD_SLOTS: usize = 512;

/// A struct field's name: its text's address and length, and the string.
type FieldSlot = Option<(usize, usize, Py<PyString>)>;

thread_local! {
    static KEYS: RefCell<HashMap<String, Py<PyString>, BuildHasherDefault<KeyHasher>>> =
        RefCell::new(HashMap::default());
    /// The structs' field names, in slots chosen by address: a
    /// `&'static str` is the same text for good, so its address names it,
    /// and finding it takes no hashing of the text, nor of anything (this
    /// lookup runs for every field of every dict a trace has). Two names
    /// that share a slot take turns in it; the models have about a hundred.
    static FIELDS: RefCell<Vec<FieldSlot>> = RefCell::new((0..FIELD_SLOTS).map(|_| None).collect());
}

/// A multiply-rotate hash (the Fx hash of rustc) for the key cache: its
/// keys are short field names, hashed on every dict key a trace has, and
/// SipHash was a visible share of converting a trace (`perf`). Metadata
/// keys from users go in too, but at most `KEY_CACHE_MAX` of them, so a
/// flood of colliding keys costs at most that many comparisons.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn key<'py>(py: Python<'py>, k: &str) -> Bound<'py, PyString> {
    if k.len() > KEY_CACHE_LEN {
        return PyString::new(py, k);
    }
    KEYS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(s) = cache.get(k) {
            return s.bind(py).clone();
        }
        let s = PyString::new(py, k);
        if cache.len() < KEY_CACHE_MAX {
            cache.insert(k.to_owned(), s.clone().unbind());
        }
        s
    })
}

/// A struct field's name as a Python string, cached by its address.
fn field_key<'py>(py: Python<'py>, name: &'static str) -> Bound<'py, PyString> {
    let (at, len) = (name.as_ptr() as usize, name.len());
    // Field names are bytes apart in the binary: the low bits pick the slot.
    let slot = (at ^ (at >> 9)) % FIELD_SLOTS;
    FIELDS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((a, l, s)) = &cache[slot] {
            if (*a, *l) == (at, len) {
                return s.bind(py).clone();
            }
        }
        let s = PyString::intern(py, name);
        cache[slot] = Some((at, len, s.clone().unbind()));
        s
    })
}

/// `value` as Python objects.
pub(crate) fn to_py<'py, T: Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> Result<Bound<'py, PyAny>> {
    value.serialize(Ser { py })
}

#[derive(Clone, Copy)]
struct Ser<'py> {
    py: Python<'py>,
}

fn int<'py, T>(py: Python<'py>, v: T) -> Result<Bound<'py, PyAny>>
where
    T: IntoPyObject<'py>,
    PyErr: From<T::Error>,
{
    Ok(v.into_pyobject(py)
        .map_err(PyErr::from)?
        .into_any()
        .into_bound())
}

/// The methods that values and map keys serialize alike.
macro_rules! same_in_both {
    () => {
        fn serialize_char(self, v: char) -> Result<Self::Ok> {
            self.serialize_str(v.encode_utf8(&mut [0; 4]))
        }
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Self::Ok> {
            value.serialize(self)
        }
        fn serialize_unit(self) -> Result<Self::Ok> {
            self.serialize_none()
        }
        fn serialize_unit_struct(self, _name: &'static str) -> Result<Self::Ok> {
            self.serialize_none()
        }
        // A unit variant is its name, a key of the models: from the key cache.
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<Self::Ok> {
            Ok(key(self.py, variant).into_any())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<Self::Ok> {
            value.serialize(self)
        }
    };
}

/// `serialize_i8` and the rest: every integer becomes a Python `int`.
macro_rules! ints {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<Self::Ok> {
            int(self.py, v)
        }
    )*};
}

/// serde's tuple and struct variants alike: `{variant: inner}`, the inner
/// compound opened by `serialize_seq` or `serialize_map`.
macro_rules! variants {
    ($($method:ident -> $ret:ident: $open:ident;)*) => {$(
        fn $method(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            len: usize,
        ) -> Result<Self::$ret> {
            let inner = self.$open(Some(len))?;
            Ok(Variant { variant, inner })
        }
    )*};
}

impl<'py> ser::Serializer for Ser<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = PythonizeError;
    type SerializeSeq = Seq<'py>;
    type SerializeTuple = Seq<'py>;
    type SerializeTupleStruct = Seq<'py>;
    type SerializeTupleVariant = Variant<Seq<'py>>;
    type SerializeMap = Map<'py>;
    type SerializeStruct = Map<'py>;
    type SerializeStructVariant = Variant<Map<'py>>;

    same_in_both!();

    fn serialize_bool(self, v: bool) -> Result<Self::Ok> {
        Ok(pyo3::types::PyBool::new(self.py, v).to_owned().into_any())
    }
    ints!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128
    );
    fn serialize_f32(self, v: f32) -> Result<Self::Ok> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Self::Ok> {
        Ok(pyo3::types::PyFloat::new(self.py, v).into_any())
    }
    fn serialize_str(self, v: &str) -> Result<Self::Ok> {
        Ok(PyString::new(self.py, v).into_any())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Self::Ok> {
        Ok(pyo3::types::PyBytes::new(self.py, v).into_any())
    }
    fn serialize_none(self) -> Result<Self::Ok> {
        Ok(self.py.None().into_bound(self.py))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok> {
        // Externally tagged, as serde_json: {variant: value}.
        let d = PyDict::new(self.py);
        d.set_item(key(self.py, variant), value.serialize(self)?)?;
        Ok(d.into_any())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq> {
        Ok(Seq {
            py: self.py,
            items: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Ok(Map {
            py: self.py,
            dict: PyDict::new(self.py),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Self::SerializeStruct> {
        self.serialize_map(Some(len))
    }
    variants! {
        serialize_tuple_variant -> SerializeTupleVariant: serialize_seq;
        serialize_struct_variant -> SerializeStructVariant: serialize_map;
    }
}

pub(crate) struct Seq<'py> {
    py: Python<'py>,
    items: Vec<Bound<'py, PyAny>>,
}

impl<'py> Seq<'py> {
    #[inline]
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.items.push(value.serialize(Ser { py: self.py })?);
        Ok(())
    }
}

pub(crate) struct Map<'py> {
    py: Python<'py>,
    dict: Bound<'py, PyDict>,
    key: Option<Bound<'py, PyAny>>,
}

/// Serializes a map key: strings through the key cache, anything else as
/// its Python value (as pythonize does).
struct KeySer<'py> {
    py: Python<'py>,
}

impl<'py> Map<'py> {
    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<()> {
        let v = value.serialize(Ser { py: self.py })?;
        self.dict.set_item(field_key(self.py, name), v)?;
        Ok(())
    }
}

impl<'py> ser::SerializeMap for Map<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = PythonizeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<()> {
        self.key = Some(k.serialize(KeySer { py: self.py })?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let k = self.key.take().ok_or_else(|| {
            <PythonizeError as ser::Error>::custom("a map value came before its key")
        })?;
        self.dict
            .set_item(k, value.serialize(Ser { py: self.py })?)?;
        Ok(())
    }
    fn end(self) -> Result<Self::Ok> {
        self.finish()
    }
}

/// A tuple or struct variant: `{variant: inner}`.
pub(crate) struct Variant<I> {
    variant: &'static str,
    inner: I,
}

impl<'py> Variant<Seq<'py>> {
    #[inline]
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.inner.push(value)
    }
}

impl<'py> Variant<Map<'py>> {
    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<()> {
        self.inner.field(name, value)
    }
}

/// A compound under construction, and the Python object it ends as.
trait Finish<'py> {
    fn py(&self) -> Python<'py>;
    fn finish(self) -> Result<Bound<'py, PyAny>>;
}

impl<'py> Finish<'py> for Seq<'py> {
    fn py(&self) -> Python<'py> {
        self.py
    }
    #[inline]
    fn finish(self) -> Result<Bound<'py, PyAny>> {
        Ok(PyList::new(self.py, self.items)?.into_any())
    }
}

impl<'py> Finish<'py> for Map<'py> {
    fn py(&self) -> Python<'py> {
        self.py
    }
    #[inline]
    fn finish(self) -> Result<Bound<'py, PyAny>> {
        Ok(self.dict.into_any())
    }
}

impl<'py, I: Finish<'py>> Finish<'py> for Variant<I> {
    fn py(&self) -> Python<'py> {
        self.inner.py()
    }
    #[inline]
    fn finish(self) -> Result<Bound<'py, PyAny>> {
        let py = self.inner.py();
        let d = PyDict::new(py);
        d.set_item(key(py, self.variant), self.inner.finish()?)?;
        Ok(d.into_any())
    }
}

/// serde's four sequence traits differ only in the name of their element
/// method, and its two struct traits not at all: `Type: Trait::method`.
macro_rules! compound_traits {
    (seq: $($ty:ty: $tr:ident::$method:ident),*; struct: $($sty:ty: $str:ident),*) => {
        $(
            impl<'py> ser::$tr for $ty {
                type Ok = Bound<'py, PyAny>;
                type Error = PythonizeError;
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                    self.push(value)
                }
                fn end(self) -> Result<Self::Ok> {
                    self.finish()
                }
            }
        )*
        $(
            impl<'py> ser::$str for $sty {
                type Ok = Bound<'py, PyAny>;
                type Error = PythonizeError;
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    name: &'static str,
                    value: &T,
                ) -> Result<()> {
                    self.field(name, value)
                }
                fn end(self) -> Result<Self::Ok> {
                    self.finish()
                }
            }
        )*
    };
}

compound_traits!(
    seq: Seq<'py>: SerializeSeq::serialize_element,
        Seq<'py>: SerializeTuple::serialize_element,
        Seq<'py>: SerializeTupleStruct::serialize_field,
        Variant<Seq<'py>>: SerializeTupleVariant::serialize_field;
    struct: Map<'py>: SerializeStruct, Variant<Map<'py>>: SerializeStructVariant
);

fn not_a_key() -> PythonizeError {
    ser::Error::custom("a map key must be a str, number or bool")
}

/// A container as a map key: refused, as pythonize refuses it.
macro_rules! refuse_keys {
    ($($method:ident($($arg:ty),*) -> $ret:ident;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<Self::$ret> {
            Err(not_a_key())
        }
    )*};
}

impl<'py> ser::Serializer for KeySer<'py> {
    type Ok = Bound<'py, PyAny>;
    type Error = PythonizeError;
    type SerializeSeq = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeTuple = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeTupleStruct = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeTupleVariant = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeMap = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeStruct = ser::Impossible<Self::Ok, Self::Error>;
    type SerializeStructVariant = ser::Impossible<Self::Ok, Self::Error>;

    same_in_both!();

    fn serialize_str(self, v: &str) -> Result<Self::Ok> {
        Ok(key(self.py, v).into_any())
    }
    fn serialize_bool(self, v: bool) -> Result<Self::Ok> {
        Ser { py: self.py }.serialize_bool(v)
    }
    ints!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64
    );
    fn serialize_f32(self, v: f32) -> Result<Self::Ok> {
        Ser { py: self.py }.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Self::Ok> {
        Ser { py: self.py }.serialize_f64(v)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Self::Ok> {
        Ser { py: self.py }.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<Self::Ok> {
        Ser { py: self.py }.serialize_none()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Self::Ok> {
        Err(not_a_key())
    }
    refuse_keys! {
        serialize_seq(Option<usize>) -> SerializeSeq;
        serialize_tuple(usize) -> SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> SerializeTupleVariant;
        serialize_map(Option<usize>) -> SerializeMap;
        serialize_struct(&'static str, usize) -> SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> SerializeStructVariant;
    }
}
