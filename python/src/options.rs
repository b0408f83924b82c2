//! Keyword options of the constructors: storage options on both classes,
//! writer options on `BufferedTraceWriter` only.
//!
//! An unknown keyword or a bad value raises `ValueError` at once (the
//! writer's own checks raise `InvalidInputError`, a `ValueError`); a value of
//! the wrong type raises `TypeError`.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use trace_writer::{JournalMode, OverflowPolicy, StorageConfig, Synchronous, WriterConfig};

use crate::errors::err;

/// Options that both classes take.
const STORAGE_KEYS: &[&str] = &["journal_mode", "synchronous", "busy_timeout"];
/// Options that only the writer takes.
const WRITER_KEYS: &[&str] = &[
    "max_batch_ops",
    "max_batch_bytes",
    "queue_capacity",
    "queue_capacity_bytes",
    "max_op_bytes",
    "linger",
    "close_timeout",
    "flush_timeout",
    "enqueue_timeout",
    "open_timeout",
    "overflow",
    "spill_path",
    "spill_dir",
    "name",
    "provisional_step_ids",
];

/// Parsed options.
#[derive(Default)]
pub(crate) struct Options {
    journal_mode: Option<JournalMode>,
    synchronous: Option<Synchronous>,
    busy_timeout: Option<Duration>,
    pub(crate) writer: WriterConfig,
}

impl Options {
    /// Parses `opts`; `writer` says whether the writer's options are allowed.
    pub(crate) fn parse(opts: Option<&Bound<'_, PyDict>>, writer: bool) -> PyResult<Self> {
        let mut out = Options::default();
        let Some(opts) = opts else {
            return Ok(out);
        };
        for (key, value) in opts.iter() {
            let key: String = key.extract()?;
            // `None` means "the default", so wrappers can pass options through.
            if value.is_none() {
                if !STORAGE_KEYS.contains(&key.as_str()) && !WRITER_KEYS.contains(&key.as_str()) {
                    return Err(unknown(&key, writer));
                }
                continue;
            }
            if !writer && WRITER_KEYS.contains(&key.as_str()) {
                return Err(PyValueError::new_err(format!(
                    "option `{key}` belongs to BufferedTraceWriter; LibsqlTraceStorage takes \
                     only {}",
                    list(STORAGE_KEYS)
                )));
            }
            let w = std::mem::take(&mut out.writer);
            out.writer = match key.as_str() {
                "journal_mode" => {
                    out.journal_mode = Some(match choice(&key, &value, &["wal", "delete"])? {
                        "wal" => JournalMode::Wal,
                        _ => JournalMode::Delete,
                    });
                    w
                }
                "synchronous" => {
                    out.synchronous =
                        Some(match choice(&key, &value, &["off", "normal", "full"])? {
                            "off" => Synchronous::Off,
                            "normal" => Synchronous::Normal,
                            _ => Synchronous::Full,
                        });
                    w
                }
                "busy_timeout" => {
                    out.busy_timeout = Some(seconds(&key, &value)?);
                    w
                }
                "max_batch_ops" => w.max_batch_ops(count(&key, &value)?),
                "max_batch_bytes" => w.max_batch_bytes(count(&key, &value)?),
                "queue_capacity" => w.queue_capacity(count(&key, &value)?),
                "queue_capacity_bytes" => w.queue_capacity_bytes(count(&key, &value)?),
                "max_op_bytes" => w.max_op_bytes(count(&key, &value)?),
                "linger" => w.linger(seconds(&key, &value)?),
                "close_timeout" => w.close_timeout(seconds(&key, &value)?),
                "flush_timeout" => w.flush_timeout(seconds(&key, &value)?),
                "enqueue_timeout" => w.enqueue_timeout(seconds(&key, &value)?),
                "open_timeout" => w.open_timeout(seconds(&key, &value)?),
                "overflow" => w.overflow(match choice(&key, &value, &["block", "reject"])? {
                    "block" => OverflowPolicy::Block,
                    _ => OverflowPolicy::Reject,
                }),
                "spill_path" => w.spill_path(path(&key, &value)?),
                "spill_dir" => w.spill_dir(path(&key, &value)?),
                "name" => {
                    let name: String = value.extract().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "option `name` must be a str, not {}",
                            type_name(&value)
                        ))
                    })?;
                    w.name(name)
                }
                "provisional_step_ids" => {
                    // Only a real bool: `"no"` would be true.
                    if !value.is_instance_of::<PyBool>() {
                        return Err(PyTypeError::new_err(format!(
                            "option `provisional_step_ids` must be a bool, not {}",
                            type_name(&value)
                        )));
                    }
                    w.provisional_step_ids(value.is_truthy()?)
                }
                _ => return Err(unknown(&key, writer)),
            };
        }
        if writer {
            out.writer.validate().map_err(err)?;
        }
        Ok(out)
    }

    /// Applies the storage options to `config`.
    pub(crate) fn storage(&self, mut config: StorageConfig) -> StorageConfig {
        if let Some(mode) = self.journal_mode {
            config = config.with_journal_mode(mode);
        }
        if let Some(sync) = self.synchronous {
            config = config.with_synchronous(sync);
        }
        if let Some(timeout) = self.busy_timeout {
            config = config.with_busy_timeout(timeout);
        }
        config
    }
}

fn list(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown(key: &str, writer: bool) -> PyErr {
    let mut known = STORAGE_KEYS.to_vec();
    if writer {
        known.extend_from_slice(WRITER_KEYS);
    }
    PyValueError::new_err(format!(
        "unknown option `{key}`; expected one of {}",
        list(&known)
    ))
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// A string option with a fixed set of values (case-insensitive).
fn choice<'a>(key: &str, value: &Bound<'_, PyAny>, allowed: &[&'a str]) -> PyResult<&'a str> {
    let s = value.cast::<PyString>().map_err(|_| {
        PyTypeError::new_err(format!(
            "option `{key}` must be a str, not {}",
            type_name(value)
        ))
    })?;
    let s = s.to_cow()?.to_ascii_lowercase();
    allowed.iter().find(|a| **a == s).copied().ok_or_else(|| {
        PyValueError::new_err(format!(
            "option `{key}` must be one of {}, not {s:?}",
            list(allowed)
        ))
    })
}

/// A path option: a str or an ``os.PathLike``.
fn path(key: &str, value: &Bound<'_, PyAny>) -> PyResult<std::path::PathBuf> {
    value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "option `{key}` must be a str or os.PathLike, not {}",
            type_name(value)
        ))
    })
}

/// A non-negative int option.
fn count(key: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "option `{key}` must be an int, not {}",
            type_name(value)
        )));
    }
    value.extract::<usize>().map_err(|_| {
        PyValueError::new_err(format!(
            "option `{key}` must be a non-negative int that fits in memory, not {value}"
        ))
    })
}

/// A duration option in seconds: a non-negative, finite int or float.
fn seconds(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>())
    {
        return Err(PyTypeError::new_err(format!(
            "option `{key}` must be a number of seconds (int or float), not {}",
            type_name(value)
        )));
    }
    let secs: f64 = value.extract()?;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "option `{key}` must be a finite, non-negative number of seconds, not {secs}"
        ))
    })
}

/// A timeout argument (`flush(timeout=...)`): seconds, or `None`.
pub(crate) fn timeout(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => seconds("timeout", v).map(Some),
    }
}
