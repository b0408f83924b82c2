//! `TraceStorage` (the base class of the storages, with the constructors
//! and the trait's methods), `LibsqlTraceStorage` and `BufferedTraceWriter`.
//!
//! - `backend`: the crate storage behind an object, and the calls that wait;
//! - `handle`: the writer's one owner, and the writers closed at exit;
//! - `calls`: the calls that both storages and `SessionTracer` have;
//! - `classes`: the classes, and what only the writer has;
//! - `methods`: the constructors and the trait's write calls;
//! - `open`: what a constructor opens.

use pyo3::prelude::*;

mod backend;
mod calls;
mod classes;
mod handle;
mod methods;
mod open;

pub(crate) use backend::{leave, Backend};
pub(crate) use calls::StorageCalls;
pub(crate) use classes::Storage;
pub(crate) use classes::{PlainStorage, WriterStorage};
pub(crate) use open::{open, StorageClass, Target};

/// Registers the classes.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Storage>()?;
    m.add_class::<PlainStorage>()?;
    m.add_class::<WriterStorage>()?;
    m.add_function(pyo3::wrap_pyfunction!(handle::_close_open_writers, m)?)?;
    Ok(())
}
