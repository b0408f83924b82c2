//! How an object that is no builtin JSON shape converts: through its
//! `to_dict()`, field by field as a dataclass, or not at all. Found once per
//! class and kept, with what the event conversion asks of a dataclass (does
//! it have `event_type`, which kind do its fields mark), so that a call
//! pays a lookup, not a walk over the class's fields.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};
use trace_writer::EventType;

/// How an object that is none of the builtin shapes converts.
#[derive(Clone)]
pub(crate) enum Shape {
    /// Through its `to_dict()` (checked first, as the original wrapper did).
    ToDict,
    /// Field by field.
    Dataclass(Rc<Dataclass>),
    /// Not at all.
    Other,
}

/// A dataclass's fields, and what they say about an event.
pub(crate) struct Dataclass {
    /// The fields, in order.
    pub(crate) fields: Box<[Py<PyString>]>,
    /// Whether one of them is `event_type`.
    pub(crate) tagged: bool,
    /// The kind the original binding infers from the field names.
    pub(crate) kind: Option<EventType>,
}

/// The hash of a class's address: the address is the whole key, so one
/// multiplication spreads it (SipHash was most of a lookup).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

type Shapes = HashMap<usize, (Py<PyType>, Shape), BuildHasherDefault<AddressHasher>>;

thread_local! {
    /// Each class's shape, found once. The class is kept alive with its
    /// entry, so that its address cannot be reused by another class.
    static SHAPES: RefCell<Shapes> = RefCell::new(HashMap::default());
}

/// The shape of `obj`'s class.
pub(crate) fn shape(obj: &Bound<'_, PyAny>) -> PyResult<Shape> {
    let ty = obj.get_type();
    let key = ty.as_ptr() as usize;
    if let Some(shape) = SHAPES.with(|s| s.borrow().get(&key).map(|(_, shape)| shape.clone())) {
        return Ok(shape);
    }
    let py = obj.py();
    let shape = if obj.is_instance_of::<PyType>() {
        // A class, not an instance: `asdict` refuses those too.
        Shape::Other
    } else if ty.hasattr("to_dict")? {
        Shape::ToDict
    } else if ty.hasattr("__dataclass_fields__")? {
        let found = py.import("dataclasses")?.getattr("fields")?.call1((&ty,))?;
        let mut fields = Vec::new();
        let mut names = Vec::new();
        for f in found.try_iter()? {
            let name = f?.getattr("name")?.cast_into::<PyString>()?;
            names.push(name.to_cow()?.into_owned());
            fields.push(name.unbind());
        }
        let has = |k: &str| names.iter().any(|n| n == k);
        Shape::Dataclass(Rc::new(Dataclass {
            fields: fields.into(),
            tagged: has("event_type"),
            kind: EventType::infer(has),
        }))
    } else {
        Shape::Other
    };
    SHAPES.with(|s| s.borrow_mut().insert(key, (ty.unbind(), shape.clone())));
    Ok(shape)
}
