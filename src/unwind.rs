//! Panics caught at the edge of a future, so that what the future worked on
//! can be kept: the transaction helper turns a panic in its body into a
//! fatal error, and the writer's actor keeps the writes it held before the
//! panic goes on to end its thread.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::Poll;

/// A panic's payload, as `std::panic::catch_unwind` gives it.
pub(crate) type Panic = Box<dyn Any + Send>;

/// `body`'s output, or the payload of a panic while it was polled. The
/// caller decides what state survives: the future is dropped either way.
pub(crate) async fn catch_unwind<F: Future>(body: F) -> Result<F::Output, Panic> {
    let mut body = pin!(body);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// What a panic said, if it said it in text.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}
