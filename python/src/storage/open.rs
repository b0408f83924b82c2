//! What a constructor opens: the database a constructor names, and the
//! class it opens it as.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use pyo3::{PyClass, PyClassInitializer};
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

/// One of the two storage classes: whether it opens a writer, and its
/// (empty) value.
pub(crate) trait StorageClass: PyClass<BaseType = Storage> {
    const WRITER: bool;
    fn value() -> Self;
}

impl StorageClass for PlainStorage {
    const WRITER: bool = false;
    fn value() -> Self {
        PlainStorage
    }
}

impl StorageClass for WriterStorage {
    const WRITER: bool = true;
    fn value() -> Self {
        WriterStorage
    }
}

/// Opens `target` as class `C`, with the options it takes.
pub(crate) fn open<C: StorageClass>(
    py: Python<'_>,
    target: Target,
    opts: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<C>> {
    let options = Options::parse(opts, C::WRITER)?;
    let config = options.storage(target.config());
    let opened = async move {
        Ok(if C::WRITER {
            let writer = BufferedTraceWriter::new(config, options.writer).await?;
            Backend::writer_handle(WriterHandle::open(writer))
        } else {
            Backend::plain(LibsqlTraceStorage::new(config).await?)
        })
    };
    let backend = py.detach(|| wait(opened)).map_err(err)?;
    let calls = StorageCalls {
        backend: backend.clone(),
    };
    let storage = PyClassInitializer::from(calls).add_subclass(Storage { backend });
    Py::new(py, storage.add_subclass(C::value()))
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
        Ok(open::<WriterStorage>(py, target, opts)?.into_any())
    } else if cls.is(py.get_type::<PlainStorage>()) {
        Ok(open::<PlainStorage>(py, target, opts)?.into_any())
    } else {
        Err(PyTypeError::new_err(
            "TraceStorage is not constructed directly: use LibsqlTraceStorage or \
             BufferedTraceWriter",
        ))
    }
}
