//! The module's tokio runtime, blocking waits and asyncio awaitables.
//!
//! One multi-thread runtime, created on first use, drives the crate's async
//! API. A synchronous call blocks its own (Python) thread on it with the GIL
//! released; an awaitable form spawns the work on it and resolves an asyncio
//! future through `loop.call_soon_threadsafe`, so the event loop never waits.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use trace_writer::TracingError;

use crate::errors::{err, to_py};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime, created on first use.
pub(crate) fn runtime() -> Result<&'static Runtime, TracingError> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Its threads only wait on the database and on timers; the writer's
        // actor has its own thread.
        .worker_threads(2)
        .thread_name("trace-writer-py")
        .enable_all()
        .build()
        .map_err(|e| TracingError::Internal(format!("cannot start the tokio runtime: {e}")))?;
    // Two threads may race here; the loser's runtime is dropped unused.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `fut` to completion on the module's runtime, blocking this thread.
/// Call it with the GIL released.
pub(crate) fn wait<T, F>(fut: F) -> Result<T, TracingError>
where
    T: Send,
    F: Future<Output = Result<T, TracingError>> + Send,
{
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        // On one of the runtime's own threads (a finalizer run by Python
        // code there): blocking it would panic, so wait on a fresh thread.
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    } else {
        rt.block_on(fut)
    }
}

/// Polls `fut` once on this thread with a waker that does nothing: the
/// writer's one fast path.
///
/// A writer's call almost never waits (an uncontended lock, and a write
/// that only queues), so it is polled once with the GIL held: releasing and
/// taking back the GIL, or handing the call to the runtime, costs more than
/// the rest of a small call. The poll never blocks the thread (every wait
/// in it is a future's, which returns `Pending`). A pending future is then
/// driven elsewhere, which polls it again with a real waker (every future
/// registers the waker of its latest poll). Not for the plain backend:
/// libsql's remote client needs the runtime's context.
#[inline(always)]
pub(crate) fn poll_now<F: Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

/// Runs a call to completion and converts its error. A writer's call
/// (`writer`) is first polled with the GIL held ([`poll_now`]); the GIL is
/// released for as long as the call waits.
#[inline(always)]
pub(crate) fn run<T, F>(py: Python<'_>, writer: bool, fut: F) -> PyResult<T>
where
    T: Send,
    F: Future<Output = Result<T, TracingError>> + Send,
{
    let mut fut = pin!(fut);
    if writer {
        if let Some(v) = poll_now(fut.as_mut()) {
            return v.map_err(err);
        }
    }
    py.detach(move || wait(fut)).map_err(err)
}

/// What an ``a*`` method returns: an awaitable, or the error raised at
/// once (a bad argument, no running event loop).
pub(crate) type Awaitable<'py> = PyResult<Bound<'py, PyAny>>;

/// An asyncio awaitable of `fut` that resolves with `convert(result)`, or
/// raises the error.
///
/// A writer's call (`writer`) is started on the caller's thread (the event
/// loop's, see [`poll_now`]) and, if it finishes there, is resolved at once
/// with `convert` run here. Any other call, or one that must wait, runs on
/// the module's runtime, and the awaitable is an asyncio future of the
/// running loop; `convert` then runs on the runtime's thread holding the
/// GIL, so the loop is not blocked.
///
/// The work starts at once, even if the awaitable is never awaited.
/// Cancelling the asyncio future only drops the answer.
pub(crate) fn awaitable<'py, T, F, C>(
    py: Python<'py>,
    writer: bool,
    fut: F,
    convert: C,
) -> Awaitable<'py>
where
    T: Send + 'static,
    F: Future<Output = Result<T, TracingError>> + Send + 'static,
    C: for<'a> FnOnce(Python<'a>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    if writer {
        if let Some(result) = poll_now(fut.as_mut()) {
            let value = convert(py, result.map_err(err)?)?;
            return ready(py, value.into_bound(py));
        }
    }
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let rt = runtime().map_err(err)?;
    let (lp, fu) = (event_loop.unbind(), future.clone().unbind());
    rt.spawn(async move {
        let result = fut.await;
        Python::attach(move |py| {
            let outcome = match result {
                Ok(value) => convert(py, value),
                Err(e) => Err(to_py(py, e)),
            };
            let (ok, value) = match outcome {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            let resolve = match pyo3::wrap_pyfunction!(resolve, py) {
                Ok(f) => f,
                Err(e) => return e.write_unraisable(py, None),
            };
            // Fails only if the loop was closed meanwhile: nobody waits.
            let _ = lp
                .bind(py)
                .call_method1("call_soon_threadsafe", (resolve, fu, ok, value));
        });
    });
    Ok(future)
}

/// An awaitable that is already resolved with `value`.
///
/// A [`Ready`], not an asyncio future: awaiting it returns `value` at once,
/// without looking up the running loop or making and resolving a future
/// (which cost more than the write call it stands for).
pub(crate) fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(
        py,
        Ready {
            value: value.unbind(),
        },
    )?
    .into_any())
}

/// An already resolved awaitable: ``await r`` returns its value without
/// yielding to the event loop, as often as it is awaited.
#[pyclass(frozen, module = "trace_writer._trace_writer")]
pub(crate) struct Ready {
    value: Py<PyAny>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Ends the iteration at once, with the value (``StopIteration(value)``
    /// is how an awaitable's iterator returns its result).
    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }
}

/// Runs on the event loop's thread: resolves `future` unless it was
/// cancelled meanwhile.
#[pyfunction]
fn resolve(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let method = if ok { "set_result" } else { "set_exception" };
    future.call_method1(method, (value,))?;
    Ok(())
}
