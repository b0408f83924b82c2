//! The JSON text of a column: exactly what `serde_json::to_string` writes,
//! written faster. (Over 500 lines: 85 of them are its tests against
//! `serde_json`.)
//!
//! Serializing a row's JSON columns is a large share of a producer's call
//! (an LLM call's records are a kilobyte or more of text), and most of that
//! was `serde_json` checking strings byte by byte for characters to escape.
//! This serializer writes the same compact text, but checks a string eight
//! bytes at a time and copies it whole when nothing in it needs escaping
//! (no `"`, `\` or control character), which is nearly always; a string that
//! does need escaping, and every number, is written by `serde_json` itself,
//! so the text is identical. The text is built in a buffer kept per thread
//! and copied out once, at its final size.

use std::cell::RefCell;

use serde::ser::{self, Serialize};
use serde_json::Error;

type Result<T> = std::result::Result<T, Error>;

/// A kept buffer larger than this is given back after use.
const KEEP_BYTES: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `value` as compact JSON text, the same text as `serde_json::to_string`.
pub(crate) fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let text = write(&mut buf, value);
            if buf.capacity() > KEEP_BYTES {
                *buf = String::new();
            }
            text
        }
        // Only a `Serialize` impl that serializes a column itself gets here.
        Err(_) => write(&mut String::with_capacity(128), value),
    })
}

/// The text is built as a `String` throughout (numbers and escaped strings
/// come from `serde_json` as text too), so it needs no UTF-8 check at the
/// end.
fn write<T: Serialize + ?Sized>(buf: &mut String, value: &T) -> Result<String> {
    value.serialize(Json { out: buf })?;
    Ok(buf.as_str().to_owned())
}

/// Whether `bytes` hold a character JSON escapes: `"`, `\` or one below
/// U+0020. Eight bytes at a time: in a word, a byte below `n` (for `n` up
/// to 0x80) is flagged by `(w - n·0x01…) & !w & 0x80…`, and a byte equal
/// to `c` is one below 1 in `w ^ c·0x01…`. Each test is exact about
/// whether any byte matches (only which one it flags can be off).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let special =
        |w: u64| below(w, 0x20) | below(w ^ (ONES * 0x22), 1) | below(w ^ (ONES * 0x5c), 1);
    let mut words = bytes.chunks_exact(8);
    if words.any(|w| {
        w.try_into()
            .map_or(true, |w| special(u64::from_le_bytes(w)) != 0)
    }) {
        return true;
    }
    // The tail, shifted into a word of spaces (which need no escaping).
    let tail = words
        .remainder()
        .iter()
        .rev()
        .fold(ONES * 0x20, |w, &b| w << 8 | u64::from(b));
    special(tail) != 0
}

/// `s` as a JSON string literal, appended to `out`: the text
/// `serde_json` writes for it.
pub(crate) fn push_str_literal(out: &mut String, s: &str) -> Result<()> {
    write_str(out, s)
}

fn write_str(out: &mut String, s: &str) -> Result<()> {
    if needs_escape(s.as_bytes()) {
        out.push_str(&serde_json::to_string(s)?);
        return Ok(());
    }
    out.reserve(s.len() + 2);
    out.push('"');
    out.push_str(s);
    out.push('"');
    Ok(())
}

/// A number as `serde_json` writes it, through a buffer on the stack: the
/// longest (an `i128`) is 40 bytes.
fn write_number<T: Serialize>(out: &mut String, v: &T) -> Result<()> {
    let mut buf = [0u8; 48];
    let mut rest = &mut buf[..];
    serde_json::to_writer(&mut rest, v)?;
    let len = 48 - rest.len();
    let text = std::str::from_utf8(&buf[..len]).map_err(<Error as ser::Error>::custom)?;
    out.push_str(text);
    Ok(())
}

/// The serializer: everything goes to `out`.
struct Json<'a> {
    out: &'a mut String,
}

/// A sequence or map being written: whether a comma goes before the next item.
struct Compound<'a> {
    out: &'a mut String,
    first: bool,
    /// `}` after the closing bracket, for a variant's `{"name":...}` wrapper.
    wrapped: bool,
}

impl<'a> Compound<'a> {
    fn open(out: &'a mut String, bracket: char, wrapped: bool) -> Self {
        out.push(bracket);
        Compound {
            out,
            first: true,
            wrapped,
        }
    }

    fn comma(&mut self) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.comma();
        value.serialize(Json { out: self.out })
    }

    /// A struct field: its name is a Rust identifier or a serde rename of
    /// the models, none of which needs escaping, so it is copied as it is
    /// (a model's test compares the whole text with `serde_json`'s).
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        debug_assert!(
            !needs_escape(key.as_bytes()),
            "field name {key:?} needs escaping"
        );
        self.comma();
        self.out.reserve(key.len() + 3);
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        value.serialize(Json { out: self.out })
    }

    fn close(self, bracket: char) -> Result<()> {
        self.out.push(bracket);
        if self.wrapped {
            self.out.push('}');
        }
        Ok(())
    }
}

/// Numbers are written by `serde_json`, so their text is its text.
macro_rules! by_serde_json {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<()> {
            write_number(self.out, &v)
        }
    )*};
}

impl<'a> Json<'a> {
    /// `{"variant":` before a variant's content.
    fn variant_key(self, variant: &str) -> Result<&'a mut String> {
        self.out.push('{');
        write_str(self.out, variant)?;
        self.out.push(':');
        Ok(self.out)
    }
}

/// The methods that values and map keys serialize alike: a string, a unit
/// variant's name, a newtype struct's inner value.
macro_rules! same_in_both {
    () => {
        fn serialize_str(self, v: &str) -> Result<()> {
            write_str(self.out, v)
        }
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<()> {
            write_str(self.out, variant)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _name: &'static str,
            value: &T,
        ) -> Result<()> {
            value.serialize(self)
        }
    };
}

/// serde's tuple and struct variants alike: `{"variant":` and a compound
/// opened by `[` or `{`, closed with the variant's `}`.
macro_rules! variants {
    ($($method:ident: $open:literal;)*) => {$(
        fn $method(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
            _len: usize,
        ) -> Result<Compound<'a>> {
            Ok(Compound::open(self.variant_key(variant)?, $open, true))
        }
    )*};
}

impl<'a> ser::Serializer for Json<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    by_serde_json!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128, serialize_f32: f32, serialize_f64: f64
    );

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.out.push_str(&serde_json::to_string(v)?);
        Ok(())
    }
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]))
    }
    same_in_both!();

    fn serialize_none(self) -> Result<()> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_none()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        let out = self.variant_key(variant)?;
        value.serialize(Json { out: &mut *out })?;
        out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>> {
        Ok(Compound::open(self.out, '[', false))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>> {
        Ok(Compound::open(self.out, '{', false))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a>> {
        self.serialize_map(Some(len))
    }
    variants! {
        serialize_tuple_variant: '[';
        serialize_struct_variant: '{';
    }
}

/// serde's four sequence traits differ only in the name of their element
/// method, and its two struct traits not at all.
macro_rules! compound_traits {
    (seq: $($tr:ident::$method:ident),*) => {$(
        impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }
            fn end(self) -> Result<()> {
                self.close(']')
            }
        }
    )*};
    (struct: $($tr:ident),*) => {$(
        impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<()> {
                self.field(key, value)
            }
            fn end(self) -> Result<()> {
                self.close('}')
            }
        }
    )*};
}

compound_traits!(seq:
    SerializeSeq::serialize_element, SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field, SerializeTupleVariant::serialize_field
);
compound_traits!(struct: SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.comma();
        key.serialize(KeyJson { out: self.out })?;
        self.out.push(':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(Json { out: self.out })
    }
    fn end(self) -> Result<()> {
        self.close('}')
    }
}

/// A map key: a string on the fast path; a number, bool or char (no column
/// has one) by `serde_json`'s map-key rules; anything else refused, as there.
struct KeyJson<'a> {
    out: &'a mut String,
}

impl KeyJson<'_> {
    fn other<K: Serialize + ?Sized>(self, key: &K) -> Result<()> {
        let mut text = Vec::new();
        ser::Serializer::collect_map(&mut serde_json::Serializer::new(&mut text), [(key, ())])?;
        // `{KEY:null}` → `KEY`.
        let key_text = text
            .get(1..text.len().saturating_sub(6))
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or_else(|| ser::Error::custom("map key"))?;
        self.out.push_str(key_text);
        Ok(())
    }
}

/// Key methods: scalars through `other`, the rest refused.
macro_rules! key_methods {
    (scalars: $($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<()> {
            self.other(&v)
        }
    )*};
    (refused: $($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ret> {
            Err(ser::Error::custom("key must be a string"))
        }
    )*};
}

type No = ser::Impossible<(), Error>;

impl ser::Serializer for KeyJson<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = No;
    type SerializeTuple = No;
    type SerializeTupleStruct = No;
    type SerializeTupleVariant = No;
    type SerializeMap = No;
    type SerializeStruct = No;
    type SerializeStructVariant = No;

    same_in_both!();

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<()> {
        Err(ser::Error::custom("key must be a string"))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<()> {
        Err(ser::Error::custom("key must be a string"))
    }

    key_methods!(scalars:
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char
    );

    key_methods!(refused:
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_seq(Option<usize>) -> No;
        serialize_tuple(usize) -> No;
        serialize_tuple_struct(&'static str, usize) -> No;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> No;
        serialize_map(Option<usize>) -> No;
        serialize_struct(&'static str, usize) -> No;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> No;
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::{BTreeMap, HashMap};

    use crate::models::{LLMCallRecord, LLMMessage, LLMUsage, TracingEvent};

    fn same<T: Serialize + ?Sized>(v: &T) {
        assert_eq!(
            to_string(v).expect("fast"),
            serde_json::to_string(v).expect("serde_json")
        );
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let escapes: String = (0u8..0x80).map(char::from).collect();
        same(&json!({
            "plain": "no escapes here, but long enough for a few chunks of sixteen",
            "escapes": escapes,
            "quote \" and \\ in a key": ["\u{7f}", "é ü 漢字 🎉", "a\"b", "tab\tend"],
            "numbers": [0, -1, u64::MAX, i64::MIN, 0.1, 1e20, 1.5e-7, -0.0, 123456.789],
            "nested": {"a": [], "b": {}, "c": [null, true, false, {"d": [[]]}]},
        }));
        same(&(i128::MIN, u128::MAX, f64::MIN_POSITIVE, -f64::MAX));
        same(&1.0f32);
        same(&0.1f32);
        same(&"x".repeat(33));
        same(&vec![Some(1), None]);
        same(&(1, "a", [2u8, 3]));
        same(&HashMap::from([(1, "int key"), (-2, "negative")]));
        same(&BTreeMap::from([(true, 1)]));
        same(&BTreeMap::from([('c', 1)]));
        let rec = LLMCallRecord {
            call_id: "c\u{1}".into(),
            input_messages: vec![LLMMessage::new("user", "line\nbreak \"quoted\"")],
            usage: Some(LLMUsage {
                cost_usd: Some(0.000085),
                ..Default::default()
            }),
            metadata: HashMap::from([("k".into(), json!({"x": [1, 2.5]}))]),
            ..Default::default()
        };
        same(&vec![rec]);
        let event = TracingEvent::from_json(json!({
            "system_instance_id": "s", "time_record": {"event_time": 1.25},
            "model_name": "m", "metadata": {"a": 1},
        }))
        .expect("event");
        same(&event);
    }

    #[test]
    fn enums_as_serde_json_writes_them() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(i32),
            Tuple(i32, &'static str),
            Struct { a: i32, b: Vec<u8> },
        }
        same(&vec![
            E::Unit,
            E::New(1),
            E::Tuple(2, "x"),
            E::Struct { a: 3, b: vec![4] },
        ]);
        assert!(to_string(&BTreeMap::from([(vec![1], 1)])).is_err());
    }

    #[test]
    fn finds_every_character_to_escape() {
        for len in [1usize, 15, 16, 17, 40] {
            for at in 0..len {
                for special in [b'"', b'\\', 0u8, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{len} {at} {special}");
                }
            }
            assert!(!needs_escape(&vec![b' '; len]));
            assert!(!needs_escape("é".repeat(len).as_bytes()));
        }
    }
}
