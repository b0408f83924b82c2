//! What a constructor opens: the database a constructor names, and the
//! class it opens it as.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3::PyClassInitializer;
use trace_writer::{BufferedTraceWriter, LibsqlTraceStorage, StorageConfig};

use crate::errors::err;
use crate::options::Options;
use crate::runtime::wait;
use crate::storage::backend::Backend;
use crate::storage::calls::StorageCalls;
use crate::storage::classes::{PlainStorage, Storage, WriterStorage};
use crate::storage::handle::WriterHandle;

/// How a constructor names its database.
pub(crate) enum Target {
    Memory,
    File(String),
    /// A URL of any kind, and its token: `None` takes the environment's,
    /// `""` means none.
    Url(String, Option<String>),
    Env,
}

impl Target {
    fn config(self) -> StorageConfig {
        match self {
            Target::Memory => StorageConfig::memory(),
            Target::File(path) => StorageConfig::file(path),
            Target::Url(url, token) => {
                let mut c = StorageConfig::file(url);
                c.auth_token = match token {
                    None => StorageConfig::from_env().auth_token,
                    Some(t) if t.is_empty() => None,
                    Some(t) => Some(t),
                };
                c
            }
            Target::Env => StorageConfig::from_env(),
        }
    }
}

pub(crate) fn path_arg(path: &Bound<'_, PyAny>) -> PyResult<String> {
    let p: std::path::PathBuf = path.extract()?;
    p.into_os_string().into_string().map_err(|p| {
        pyo3::exceptions::PyValueError::new_err(format!("path is not valid UTF-8: {p:?}"))
    })
}

/// A `TraceStorage` over `backend`, with its base.
fn storage_init(backend: Backend) -> PyClassInitializer<Storage> {
    let calls = StorageCalls {
        backend: backend.clone(),
    };
    PyClassInitializer::from(calls).add_subclass(Storage { backend })
}

/// Opens the plain backend.
pub(crate) fn open_plain(
    py: Python<'_>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PlainStorage>> {
    let options = Options::parse(opts, false)?;
    let config = options.storage(target.config());
    let storage = py
        .detach(|| wait(LibsqlTraceStorage::new(config)))
        .map_err(err)?;
    let backend = Backend::plain(storage);
    Py::new(py, storage_init(backend).add_subclass(PlainStorage))
}

/// Opens the writer.
pub(crate) fn open_writer(
    py: Python<'_>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<WriterStorage>> {
    let options = Options::parse(opts, true)?;
    let config = options.storage(target.config());
    let writer_config = options.writer;
    let writer = py
        .detach(|| wait(BufferedTraceWriter::new(config, writer_config)))
        .map_err(err)?;
    let backend = Backend::writer_handle(WriterHandle::open(writer));
    Py::new(py, storage_init(backend).add_subclass(WriterStorage))
}

/// Opens `target` as `cls`, the class a constructor was called on: the
/// constructors are written once, on the base class, for both.
pub(crate) fn open_as(
    cls: &Bound<'_, PyType>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = cls.py();
    if cls.is(py.get_type::<WriterStorage>()) {
        Ok(open_writer(py, target, opts)?.into_any())
    } else if cls.is(py.get_type::<PlainStorage>()) {
        Ok(open_plain(py, target, opts)?.into_any())
    } else {
        Err(PyTypeError::new_err(
            "TraceStorage is not constructed directly: use LibsqlTraceStorage or \
             BufferedTraceWriter",
        ))
    }
}
