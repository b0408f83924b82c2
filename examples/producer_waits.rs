//! What each producer call of a rollout costs, and which of them wait for
//! the writer's actor.
//!
//! ```text
//! cargo run --release --example producer_waits -- [--sessions N] [--background R] [--gap-us G]
//! ```
//!
//! One task walks `N` short sessions call by call (a session, two steps with
//! an event and a message each, their ends, an outcome reward and the
//! counts) and times every call, first on an idle writer and then while `R`
//! rollouts of the main job run on the same writer. The first
//! `ensure_timestep` of each session is the one call that waits for the
//! actor: it loads the session's committed steps, asked for by
//! `ensure_session`. `--gap-us` puts that many microseconds between the two
//! (a rollout resets its environment there), outside the timings. The table
//! gives each call's median, 99th percentile and maximum in microseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use trace_writer::workload;
use trace_writer::{
    BufferedTraceWriter, OutcomeReward, SessionTimeStep, SessionTracer, StorageConfig,
    TraceStorage, TracingError, WriterConfig,
};

/// The calls timed, in the order a session makes them.
const CALLS: [&str; 10] = [
    "ensure_session",
    "ensure_timestep (new session)",
    "insert_event",
    "insert_message",
    "update_timestep",
    "ensure_timestep (known session)",
    "insert_event (2)",
    "update_timestep (2)",
    "insert_outcome_reward",
    "update_session_counts",
];

#[tokio::main]
async fn main() {
    let mut sessions = 2000;
    let mut background = 256;
    let mut gap_us = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--sessions", Some(v)) => sessions = v,
            ("--background", Some(v)) => background = v,
            ("--gap-us", Some(v)) => gap_us = v,
            _ => {
                eprintln!("usage: producer_waits [--sessions N] [--background R] [--gap-us G]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(sessions, background, Duration::from_micros(gap_us as u64)).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(sessions: usize, background: usize, gap: Duration) -> Result<(), TracingError> {
    let dir = tempfile::tempdir().map_err(|e| TracingError::Internal(e.to_string()))?;
    let path = dir.path().join("waits.db");
    let writer = BufferedTraceWriter::new(
        StorageConfig::file(path.to_string_lossy().into_owned()),
        WriterConfig::default(),
    )
    .await?;

    let idle = walk(&writer, "idle", sessions, gap).await?;
    let before = writer.stats();
    let mut load = tokio::task::JoinSet::new();
    for r in 0..background {
        let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
        load.spawn(async move {
            let tracer = SessionTracer::new(storage);
            workload::run_rollout(&tracer, r).await
        });
    }
    // Let the rollouts get going, so the actor is busy with batches.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let busy = walk(&writer, "busy", sessions, gap).await?;
    while let Some(done) = load.join_next().await {
        done.map_err(|e| TracingError::Internal(e.to_string()))??;
    }
    writer.flush().await?;
    let after = writer.stats();

    println!("| call | idle writer p50 / p99 / max (µs) | {background} rollouts running p50 / p99 / max (µs) |");
    println!("|---|---|---|");
    for (i, name) in CALLS.iter().enumerate() {
        println!(
            "| `{name}` | {} | {} |",
            summary(&idle[i]),
            summary(&busy[i])
        );
    }
    println!(
        "\nid leases: {} (producers waited for one {} times); batches: {}; mean batch {:.0} operations",
        after.id_leases,
        after.lease_waits,
        after.batches,
        after.mean_batch_ops()
    );
    println!(
        "while busy: {} operations committed in {} batches",
        after.committed - before.committed,
        after.batches - before.batches
    );
    writer.close().await
}

/// Walks `n` sessions, timing every call; returns the times per call.
async fn walk(
    writer: &BufferedTraceWriter,
    tag: &str,
    n: usize,
    gap: Duration,
) -> Result<Vec<Vec<Duration>>, TracingError> {
    let storage: &dyn TraceStorage = writer;
    let mut times = vec![Vec::with_capacity(n); CALLS.len()];
    let event = workload::env_event(1);
    let message = trace_writer::MarkovBlanketMessage {
        content: trace_writer::MessageContent::from_text("observation"),
        message_type: "user".into(),
        time_record: trace_writer::TimeRecord {
            event_time: 1.0,
            message_time: None,
        },
        metadata: HashMap::new(),
    };
    for s in 0..n {
        let sid = format!("{tag}-{s}");
        let step0 = SessionTimeStep::new("step-0", 0);
        let step1 = SessionTimeStep::new("step-1", 1);
        let mut k = 0;
        let mut timed = |k: &mut usize, started: Instant| {
            times[*k].push(started.elapsed());
            *k += 1;
        };
        let t = Instant::now();
        storage.ensure_session(&sid, Utc::now(), &json!({})).await?;
        timed(&mut k, t);
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let t = Instant::now();
        let ts = storage.ensure_timestep(&sid, &step0).await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage.insert_event(&sid, Some(ts), &event).await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage.insert_message(&sid, Some(ts), &message).await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage
            .update_timestep(&sid, "step-0", Some(Utc::now()))
            .await?;
        timed(&mut k, t);
        let t = Instant::now();
        let ts = storage.ensure_timestep(&sid, &step1).await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage.insert_event(&sid, Some(ts), &event).await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage
            .update_timestep(&sid, "step-1", Some(Utc::now()))
            .await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage
            .insert_outcome_reward(&sid, &OutcomeReward::default())
            .await?;
        timed(&mut k, t);
        let t = Instant::now();
        storage.update_session_counts(&sid).await?;
        timed(&mut k, t);
    }
    Ok(times)
}

fn summary(times: &[Duration]) -> String {
    let mut us: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    if us.is_empty() {
        return "–".into();
    }
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    format!("{:.1} / {:.1} / {:.0}", at(0.5), at(0.99), at(1.0))
}
