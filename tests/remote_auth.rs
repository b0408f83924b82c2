//! sqld with JWT auth: the right token works; a wrong one gets a clear
//! error from `new()` at once, not a hang or a retry loop; and no error,
//! `Debug` output or log line ever shows a token.
//!
//! Opt-in, like every remote test: see `tests/remote.rs` for how to run.
mod common;
mod support;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::json;
use support::jwt::Key;
use support::sqld::Sqld;
use trace_writer::*;

// ---------------------------------------------------------------------------
// Every log line of the process, whatever its level or target
// ---------------------------------------------------------------------------

/// A subscriber that keeps every event and span field as text.
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    next_span: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {} ", span.metadata().name());
        span.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = String::from("record ");
        values.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!(
            "{} {} ",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The process's log lines so far; installs the capture on first use (the
/// writer logs from its own thread, so it must be the global default).
fn logs() -> Arc<Mutex<Vec<String>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            tracing::subscriber::set_global_default(Capture {
                lines: lines.clone(),
                next_span: AtomicU64::new(1),
            })
            .expect("no other global subscriber in this test binary");
            lines
        })
        .clone()
}

/// Fails if any log line so far holds `secret`; returns how many there were.
fn assert_not_logged(secret: &str) -> usize {
    let lines = logs();
    let lines = lines.lock().unwrap();
    if let Some(line) = lines.iter().find(|l| l.contains(secret)) {
        panic!("a log line shows the token: {line}");
    }
    lines.len()
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

/// Bounds a call that must not hang; its own deadlines are shorter.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn the_right_token_is_accepted() {
    logs();
    let key = Key::from_seed(1);
    let server = Sqld::start_with_jwt_key(&key.public_key()).await;
    for claims in [json!({}), json!({"a": "rw"})] {
        let token = key.token(&claims);
        let config = StorageConfig::turso(server.url(), token.clone());
        assert!(!format!("{config:?}").contains(&token));

        let writer = BufferedTraceWriter::new(config.clone(), WriterConfig::default())
            .await
            .unwrap_or_else(|e| panic!("the writer refused the right token ({claims}): {e}"));
        let trace = common::sample_trace(&format!("auth-{claims}"), 2);
        common::write_trace(&writer, &trace).await;
        writer.flush().await.unwrap();
        assert_eq!(
            writer.get_session(&trace.session_id).await.unwrap(),
            Some(trace.clone())
        );
        writer.close().await.unwrap();

        let plain = LibsqlTraceStorage::new(config)
            .await
            .unwrap_or_else(|e| panic!("the plain backend refused the right token: {e}"));
        assert_eq!(
            plain.get_session(&trace.session_id).await.unwrap(),
            Some(trace)
        );
        plain.close().await.unwrap();
        assert_not_logged(&token);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn a_wrong_token_is_refused_at_once_and_never_shown() {
    logs();
    let key = Key::from_seed(1);
    let server = Sqld::start_with_jwt_key(&key.public_key()).await;
    let signed_by_another_key = Key::from_seed(2).token(&json!({}));
    let not_a_jwt = format!("not-a-jwt-{}", uuid::Uuid::new_v4());
    // The right signature over other claims: a tampered token.
    let right = key.token(&json!({}));
    let (head, rest) = right.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{head}.{}.{signature}",
        base64_url(br#"{"a":"rw","sub":"someone else"}"#)
    );
    for (name, token) in [
        ("signed by another key", signed_by_another_key),
        ("not a JWT", not_a_jwt),
        ("tampered", tampered),
        ("empty", String::new()),
    ] {
        let config = StorageConfig::turso(server.url(), token.clone());
        let shows = |text: &str| !token.is_empty() && text.contains(&token);
        assert!(!shows(&format!("{config:?}")), "{name}: config Debug");
        // Retrying transient faults until its deadline would end in
        // `Timeout`; a refused token is not transient.
        let writer_config = WriterConfig::default().open_timeout(Duration::from_secs(20));
        let err = bounded(
            "BufferedTraceWriter::new",
            BufferedTraceWriter::new(config.clone(), writer_config),
        )
        .await
        .map(|_| ())
        .expect_err(name);
        check_refusal("BufferedTraceWriter::new", name, &err, &shows);

        let err = bounded("LibsqlTraceStorage::new", LibsqlTraceStorage::new(config))
            .await
            .map(|_| ())
            .expect_err(name);
        check_refusal("LibsqlTraceStorage::new", name, &err, &shows);
        if !token.is_empty() {
            assert_not_logged(&token);
        }
    }
    // The server still takes the right token: the refusals were the tokens'.
    let plain = LibsqlTraceStorage::new(StorageConfig::turso(server.url(), right.clone()))
        .await
        .unwrap();
    plain.close().await.unwrap();
    let lines = assert_not_logged(&right);
    eprintln!("auth: {lines} log lines captured, none shows a token");
}

/// A refusal is a database error that says it was about authorization,
/// not a timeout, and shows no token in its `Display` or `Debug`.
fn check_refusal(call: &str, name: &str, err: &TracingError, shows: &dyn Fn(&str) -> bool) {
    let text = err.to_string();
    assert!(!shows(&text), "{call}, {name}: the error shows the token");
    assert!(
        !shows(&format!("{err:?}")),
        "{call}, {name}: the error's Debug shows the token"
    );
    assert!(
        matches!(err, TracingError::Database(_)),
        "{call}, {name}: expected a database error, got {err:?}"
    );
    eprintln!("auth: {call}, {name}: {text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("401") || lower.contains("unauthorized"),
        "{call}, {name}: the error does not say the token was refused: {text}"
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
