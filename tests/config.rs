//! No configuration value panics: every setter at 0, 1 and its maximum
//! either works or gets `InvalidInput` from `new()` naming the setting.
mod common;

use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use serde_json::json;
use trace_writer::*;

/// The three extremes of a setter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extreme {
    Zero,
    One,
    Max,
}

const EXTREMES: [Extreme; 3] = [Extreme::Zero, Extreme::One, Extreme::Max];

/// Every setter with a numeric or duration value, by name.
const SETTERS: [&str; 16] = [
    "max_batch_ops",
    "max_batch_bytes",
    "linger",
    "queue_capacity",
    "queue_capacity_bytes",
    "max_op_bytes",
    "close_timeout",
    "flush_timeout",
    "enqueue_timeout",
    "open_timeout",
    "id_block",
    "retry_initial",
    "retry_max",
    "error_history",
    "session_cache",
    "busy_timeout",
];

fn size(e: Extreme) -> usize {
    match e {
        Extreme::Zero => 0,
        Extreme::One => 1,
        Extreme::Max => usize::MAX,
    }
}

/// For durations, "one" is a millisecond.
fn duration(e: Extreme) -> Duration {
    match e {
        Extreme::Zero => Duration::ZERO,
        Extreme::One => Duration::from_millis(1),
        Extreme::Max => Duration::MAX,
    }
}

fn apply(
    (mut w, mut s): (WriterConfig, StorageConfig),
    setter: &str,
    e: Extreme,
) -> (WriterConfig, StorageConfig) {
    w = match setter {
        "max_batch_ops" => w.max_batch_ops(size(e)),
        "max_batch_bytes" => w.max_batch_bytes(size(e)),
        "linger" => w.linger(duration(e)),
        "queue_capacity" => w.queue_capacity(size(e)),
        "queue_capacity_bytes" => w.queue_capacity_bytes(size(e)),
        "max_op_bytes" => w.max_op_bytes(size(e)),
        "close_timeout" => w.close_timeout(duration(e)),
        "flush_timeout" => w.flush_timeout(duration(e)),
        "enqueue_timeout" => w.enqueue_timeout(duration(e)),
        "open_timeout" => w.open_timeout(duration(e)),
        "id_block" => w.id_block(match e {
            Extreme::Zero => 0,
            Extreme::One => 1,
            Extreme::Max => i64::MAX,
        }),
        "retry_initial" => w.retry_initial(duration(e)),
        "retry_max" => w.retry_max(duration(e)),
        "error_history" => w.error_history(size(e)),
        "session_cache" => w.session_cache(size(e)),
        "busy_timeout" => {
            s = s.with_busy_timeout(duration(e));
            w
        }
        other => panic!("unknown setter {other}"),
    };
    (w, s)
}

/// Settings whose tiny values legitimately make a wait time out.
fn may_time_out(applied: &[(&str, Extreme)]) -> bool {
    applied.iter().any(|(name, e)| {
        *e == Extreme::One
            && matches!(
                *name,
                "flush_timeout" | "enqueue_timeout" | "open_timeout" | "close_timeout"
            )
    })
}

/// Opens a writer with these settings and uses it. Returns a description of
/// what happened, or fails the test on a panic or a wrong error.
async fn exercise(applied: &[(&'static str, Extreme)]) {
    let mut configs = (WriterConfig::default(), StorageConfig::memory());
    for (name, e) in applied {
        configs = apply(configs, name, *e);
    }
    let (writer_config, storage) = configs;
    let tolerant = may_time_out(applied);
    let writer = match BufferedTraceWriter::new(storage, writer_config).await {
        Ok(w) => w,
        Err(TracingError::InvalidInput(msg)) => {
            assert!(
                applied.iter().any(|(name, _)| msg.contains(name)),
                "{applied:?}: the message names none of the settings: {msg}"
            );
            return;
        }
        Err(TracingError::Timeout(_)) if tolerant => return,
        Err(e) => panic!("{applied:?}: new() failed with {e:?}"),
    };
    let op_too_big = applied
        .iter()
        .any(|(name, e)| *name == "max_op_bytes" && *e == Extreme::One);
    let wrote = writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .and(
            writer
                .insert_event("s", None, &common::env_event(0))
                .await
                .map(|_| ()),
        );
    match wrote {
        Ok(()) => {}
        Err(TracingError::InvalidInput(msg)) if op_too_big => {
            assert!(msg.contains("max_op_bytes"), "{msg}")
        }
        Err(TracingError::Timeout(_)) if tolerant => {}
        Err(e) => panic!("{applied:?}: write failed with {e:?}"),
    }
    match writer.flush().await {
        Ok(()) => {}
        Err(TracingError::Timeout(_)) if tolerant => {}
        Err(e) => panic!("{applied:?}: flush failed with {e:?}"),
    }
    match writer.close().await {
        Ok(()) => {}
        Err(TracingError::Spilled { .. } | TracingError::CloseFailed { .. }) if tolerant => {}
        Err(e) => panic!("{applied:?}: close failed with {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setter_at_every_extreme_works_or_is_refused_by_name() {
    for name in SETTERS {
        for e in EXTREMES {
            exercise(&[(name, e)]).await;
        }
    }
}

#[tokio::test]
async fn refusals_name_their_setting() {
    let cases: [(WriterConfig, &str); 6] = [
        (WriterConfig::default().max_batch_ops(0), "max_batch_ops"),
        (
            WriterConfig::default().queue_capacity_bytes(0),
            "queue_capacity_bytes",
        ),
        (
            WriterConfig::default().flush_timeout(Duration::ZERO),
            "flush_timeout",
        ),
        (
            WriterConfig::default().open_timeout(Duration::ZERO),
            "open_timeout",
        ),
        (WriterConfig::default().id_block(i64::MAX), "id_block"),
        (
            WriterConfig::default().retry_max(Duration::MAX),
            "retry_max",
        ),
    ];
    for (config, name) in cases {
        match BufferedTraceWriter::new(StorageConfig::memory(), config).await {
            Err(TracingError::InvalidInput(msg)) => {
                assert!(msg.starts_with(name), "{name}: {msg}")
            }
            other => panic!("{name}: expected InvalidInput, got {other:?}"),
        }
    }
}

/// `Duration::MAX` means "no deadline": a writer with every wait unbounded
/// writes, flushes and closes.
#[tokio::test]
async fn duration_max_means_no_deadline() {
    let config = WriterConfig::default()
        .linger(Duration::MAX)
        .close_timeout(Duration::MAX)
        .flush_timeout(Duration::MAX)
        .enqueue_timeout(Duration::MAX)
        .open_timeout(Duration::MAX);
    let storage = StorageConfig::memory().with_busy_timeout(Duration::MAX);
    let writer = BufferedTraceWriter::new(storage, config).await.unwrap();
    writer
        .ensure_session("s", Utc::now(), &json!({}))
        .await
        .unwrap();
    writer.flush().await.unwrap();
    assert_eq!(writer.stats().committed, 1);
    writer.close().await.unwrap();
}

fn extreme() -> impl Strategy<Value = Extreme> {
    prop_oneof![Just(Extreme::Zero), Just(Extreme::One), Just(Extreme::Max)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Several setters at random extremes at once.
    #[test]
    fn combined_extremes_never_panic(
        picks in proptest::collection::vec((0..SETTERS.len(), extreme()), 1..5)
    ) {
        let applied: Vec<(&'static str, Extreme)> =
            picks.into_iter().map(|(i, e)| (SETTERS[i], e)).collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(exercise(&applied));
    }
}
