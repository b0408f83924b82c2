//! Python bindings of `trace-writer`: the module `trace_writer._trace_writer`,
//! re-exported by the `trace_writer` package.
//!
//! # Layout
//! - `errors`: the exception classes and the mapping from `TracingError`.
//! - `convert`: payloads to models and back, time arguments, query
//!   parameters; `slow`, the slow path, which converts datetimes and names
//!   the field in an `InvalidInputError`; `shape`, how a class that is no
//!   builtin shape converts (dataclass, `to_dict()`).
//! - `fastde`, `fastser`: serde's deserializer and serializer over Python
//!   objects, with fast paths for plain dicts, lists and str in front of
//!   pythonize (which they fall back to for anything else).
//! - `flat`: the event models read field by field (no flatten buffer).
//! - `options`: the constructors' keyword options.
//! - `runtime`: the module's tokio runtime, blocking waits with the GIL
//!   released, the writer's one fast path (`poll_now`), and asyncio
//!   awaitables.
//! - `storage`: `TraceStorage`, `LibsqlTraceStorage`, `BufferedTraceWriter`
//!   over `Arc<dyn TraceStorage>`, and `_StorageCalls`, the base class they
//!   share with `SessionTracer`.
//! - `tracer`: `SessionTracer` and its `session()`/`timestep()` helpers.
// One function reads CPython's string layout (`fastde::text`); nothing
// else may use `unsafe`.
#![deny(unsafe_code)]

mod convert;
mod errors;
mod fastde;
mod fastser;
mod flat;
mod options;
mod runtime;
mod shape;
mod slow;
mod storage;
mod tracer;

use pyo3::prelude::*;

/// The extension's Rust allocations (rows, models, queued operations) go to
/// mimalloc. A row is allocated on the caller's thread and freed on the
/// writer's thread; with the system allocator those cross-thread frees
/// contended, and `record_event`'s p99 was 64–91 µs against 17–33 µs with
/// mimalloc (python/bench, same machine, back to back). Python's own
/// objects are untouched: they are made through Python's API.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use trace_writer::SessionTrace;

/// The trace as the models shape it: every default filled in, times as
/// RFC 3339 strings. A trace read back from storage equals the canonical
/// form of what was written.
#[pyfunction]
fn canonical_trace(py: Python<'_>, trace: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let trace: SessionTrace = convert::model("trace", trace)?;
    convert::to_py(py, &trace)
}

/// An event as the models shape it (see `canonical_trace`).
#[pyfunction]
fn canonical_event(py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let event = convert::event(event)?;
    convert::to_py(py, &event)
}

/// The exception that a crate error of kind `variant` maps to, built from
/// a constructed error: lets the tests check the mapping of variants that no
/// public call can produce on demand (`InvalidState`, `Internal`,
/// `CloseFailed`). Not part of the API.
#[pyfunction]
fn _error_for_variant(py: Python<'_>, variant: &str) -> PyResult<Py<PyAny>> {
    use trace_writer::TracingError as E;
    let e = match variant {
        "Database" => E::Database("disk I/O error".into()),
        "NoActiveSession" => E::NoActiveSession,
        "NoActiveTimestep" => E::NoActiveTimestep,
        "SessionAlreadyActive" => E::SessionAlreadyActive("s1".into()),
        "InvalidState" => E::InvalidState("bad state".into()),
        "Serialization" => E::Serialization("bad json".into()),
        "NotInitialized" => E::NotInitialized,
        "Internal" => E::Internal("bug".into()),
        "WriterClosed" => E::WriterClosed,
        "QueueFull" => E::QueueFull,
        "InvalidInput" => E::InvalidInput("bad input".into()),
        "WriteFailed" => E::WriteFailed {
            failed: 3,
            first_cause: "constraint failed".into(),
        },
        "Timeout" => E::Timeout("flush".into()),
        "Spilled" => E::Spilled {
            path: "/tmp/x.spill.jsonl".into(),
            count: 7,
        },
        "CloseFailed" => E::CloseFailed {
            count: 2,
            cause: "deadline".into(),
        },
        "Halted" => E::Halted {
            cause: "no such table: events".into(),
            path: "/tmp/h.spill.jsonl".into(),
            spilled: 5,
        },
        other => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "unknown variant {other}"
            )))
        }
    };
    Ok(errors::to_py(py, e).into_value(py).into_any())
}

/// The provider of a model name, by the original module's rules:
/// ``"openai"``, ``"anthropic"``, ``"google"``, ``"azure"``, ``"local"`` or
/// ``"unknown"``.
///
/// >>> import trace_writer
/// >>> trace_writer.tracing_detect_provider("gpt-4o-mini")
/// 'openai'
#[pyfunction]
#[pyo3(signature = (model_name=None))]
fn tracing_detect_provider(model_name: Option<&str>) -> &'static str {
    trace_writer::pricing::detect_provider(model_name)
}

/// The cost in US dollars of a call, from the original module's price
/// table (per 1,000 tokens), or ``None`` for a model it has no price for.
///
/// >>> import trace_writer
/// >>> round(trace_writer.tracing_calculate_cost("gpt-3.5-turbo", 1000, 2000), 6)
/// 0.0035
#[pyfunction]
fn tracing_calculate_cost(model_name: &str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
    trace_writer::pricing::calculate_cost(model_name, input_tokens, output_tokens)
}

/// Converts `event` `n` times and drops the result, for the benchmark's
/// profile of where a call's time goes. `mode` is `"direct"` (what the
/// bindings do: the tag is read, then the variant deserializes field by
/// field), `"flatten"` (an LLM call through the model's own
/// `#[serde(flatten)]` deserializer),
/// `"enum"` (serde's internally tagged enum, which buffers the whole dict),
/// `"json"` (a `serde_json::Value` first, then the model: the double
/// conversion) or `"pythonize"` (the enum through pythonize's own
/// deserializer, without the fast path). Not part of the API.
#[pyfunction]
fn _bench_convert(event: &Bound<'_, PyAny>, mode: &str, n: usize) -> PyResult<()> {
    for _ in 0..n {
        match mode {
            "direct" => drop(convert::event(event)?),
            "flatten" => drop(
                fastde::from_py::<trace_writer::LMCAISEvent>(event)
                    .map_err(|e| errors::invalid(e.to_string()))?,
            ),
            "enum" => drop(
                fastde::from_py::<trace_writer::TracingEvent>(event)
                    .map_err(|e| errors::invalid(e.to_string()))?,
            ),
            "pythonize" => drop(
                pythonize::depythonize::<trace_writer::TracingEvent>(event)
                    .map_err(|e| errors::invalid(e.to_string()))?,
            ),
            "json" => {
                let v: serde_json::Value =
                    fastde::from_py(event).map_err(|e| errors::invalid(e.to_string()))?;
                drop(
                    serde_json::from_value::<trace_writer::TracingEvent>(v)
                        .map_err(|e| errors::invalid(e.to_string()))?,
                );
            }
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown mode {other}"
                )))
            }
        }
    }
    Ok(())
}

#[pymodule]
fn _trace_writer(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = errors::classes(py)?;
    for cls in classes.all() {
        let cls = cls.bind(py);
        m.add(cls.name()?, cls)?;
    }
    storage::register(m)?;
    tracer::register(m)?;
    m.add_function(wrap_pyfunction!(canonical_trace, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_event, m)?)?;
    m.add_function(wrap_pyfunction!(_error_for_variant, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_convert, m)?)?;
    m.add_function(wrap_pyfunction!(tracing_detect_provider, m)?)?;
    m.add_function(wrap_pyfunction!(tracing_calculate_cost, m)?)?;
    m.add("MAX_NESTING_DEPTH", trace_writer::MAX_NESTING_DEPTH)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
