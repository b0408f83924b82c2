//! Writer and plain backend through the latency proxy at 0, 5, 20 and 50 ms
//! of added round trip: events per second, and the TCP connections opened
//! per writer batch and per plain operation.
//!
//! A measurement, not a benchmark with limits: it prints its figures and
//! asserts only that every row arrived. Opt-in, like every remote test (see
//! `tests/remote.rs`); run it alone and with `--nocapture` to see the
//! table:
//!
//! ```text
//! TRACE_WRITER_SQLD=/path/to/sqld cargo test --release --test remote_latency -- --ignored --nocapture
//! ```
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::proxy::Proxy;
use support::sqld::Sqld;
use trace_writer::*;

const ROUND_TRIPS_MS: [u64; 4] = [0, 5, 20, 50];
/// Small events written through the writer by `PRODUCERS` concurrent
/// producers, by default (`TRACE_WRITER_LATENCY_EVENTS`): sixteen full
/// batches, so that the first ones (the id blocks are still growing) weigh
/// little.
const WRITER_EVENTS: usize = 16 * 4096;
const PRODUCERS: usize = 16;
/// Rollouts through the writer by default (`TRACE_WRITER_LATENCY_ROLLOUTS`),
/// from `PRODUCERS` concurrent tracers: about one full batch.
const WRITER_ROLLOUTS: usize = 32;

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// No deadline on a flush: at 50 ms a slow writer takes minutes, and the
/// figure is what this test is for.
fn config() -> WriterConfig {
    WriterConfig::default().flush_timeout(Duration::MAX)
}

fn writer_events() -> usize {
    std::env::var("TRACE_WRITER_LATENCY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITER_EVENTS)
}

fn writer_rollouts() -> usize {
    std::env::var("TRACE_WRITER_LATENCY_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITER_ROLLOUTS)
}

/// Runs `rollouts` rollouts from `tracers` concurrent tracers.
async fn rollouts(storage: Arc<dyn TraceStorage>, rollouts: usize, tracers: usize) {
    let tasks: Vec<_> = (0..tracers)
        .map(|t| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let tracer = SessionTracer::new(storage);
                for r in (t..rollouts).step_by(tracers) {
                    workload::run_rollout(&tracer, r).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Writes `n` small events from `producers` concurrent producers, each in
/// a session of its own.
async fn small_events(storage: Arc<dyn TraceStorage>, n: usize, producers: usize) {
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let sid = format!("latency-{p}");
                for i in (p..n).step_by(producers) {
                    storage
                        .insert_event(&sid, None, &workload::small_event(i))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn events(storage: &dyn TraceStorage) -> usize {
    let rows = storage
        .query("SELECT COUNT(*) AS n FROM events", vec![])
        .await
        .unwrap();
    rows[0]["n"].as_u64().unwrap() as usize
}

/// One writer run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    events_per_sec: f64,
    secs_per_batch: f64,
    conns_per_batch: f64,
    batches: u64,
    retries: u64,
    /// Producers that found no id left and waited for a lease.
    lease_waits: u64,
}

impl Run {
    fn print(&self, rtt_ms: u64, what: &str) {
        eprintln!(
            "latency: {rtt_ms:>2} ms: writer, {what}: {:.0} events/s, {} batches, {:.2} s/batch, \
             {:.1} connections/batch, {} retries, {} lease waits",
            self.events_per_sec,
            self.batches,
            self.secs_per_batch,
            self.conns_per_batch,
            self.retries,
            self.lease_waits
        );
    }
}

enum Work {
    SmallEvents,
    Rollouts(usize),
}

/// The writer, on a server of its own, through a proxy adding `rtt`.
async fn writer_run(rtt: Duration, work: Work) -> Run {
    let server = Sqld::start().await;
    let proxy = Proxy::start(server.addr(), rtt).await;
    let writer = BufferedTraceWriter::new(remote(proxy.url()), config())
        .await
        .unwrap();
    let (conns0, before) = (proxy.connections(), writer.stats());
    let storage: Arc<dyn TraceStorage> = Arc::new(writer.clone());
    let start = Instant::now();
    let written = match work {
        Work::SmallEvents => {
            let n = writer_events();
            small_events(storage, n, PRODUCERS).await;
            n
        }
        Work::Rollouts(n) => {
            rollouts(storage, n, PRODUCERS).await;
            n * workload::EVENTS_PER_ROLLOUT
        }
    };
    writer.flush().await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let stats = writer.stats();
    let conns = proxy.connections() - conns0;
    let batches = stats.batches - before.batches;
    assert_eq!(events(&writer).await, written, "writer at {rtt:?}");
    assert_eq!(stats.failed, 0, "writer at {rtt:?}: {stats:?}");
    assert_eq!(stats.committed, stats.enqueued, "writer at {rtt:?}");
    writer.close().await.unwrap();
    Run {
        events_per_sec: written as f64 / elapsed,
        secs_per_batch: elapsed / batches.max(1) as f64,
        conns_per_batch: conns as f64 / batches.max(1) as f64,
        batches,
        retries: stats.retries - before.retries,
        lease_waits: stats.lease_waits - before.lease_waits,
    }
}

/// The plain backend, one event after another: events per second and TCP
/// connections per operation.
async fn plain_run(rtt: Duration) -> (f64, f64) {
    // Fewer at a distance: each call is at least a round trip.
    let n = if rtt.is_zero() { 400 } else { 100 };
    let server = Sqld::start().await;
    let proxy = Proxy::start(server.addr(), rtt).await;
    let plain: Arc<dyn TraceStorage> =
        Arc::new(LibsqlTraceStorage::new(remote(proxy.url())).await.unwrap());
    let conns0 = proxy.connections();
    let start = Instant::now();
    small_events(plain.clone(), n, 1).await;
    let elapsed = start.elapsed().as_secs_f64();
    let conns = proxy.connections() - conns0;
    assert_eq!(events(&*plain).await, n, "plain at {rtt:?}");
    plain.close().await.unwrap();
    (n as f64 / elapsed, conns as f64 / n as f64)
}

struct Row {
    rtt_ms: u64,
    events: Run,
    rollouts: Run,
    plain_eps: f64,
    plain_conns_per_op: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn writer_and_plain_through_added_round_trips() {
    support::sqld::binary();
    let n_rollouts = writer_rollouts();
    let mut rows = Vec::new();
    for rtt_ms in ROUND_TRIPS_MS {
        let rtt = Duration::from_millis(rtt_ms);
        let events = writer_run(rtt, Work::SmallEvents).await;
        events.print(rtt_ms, "small events");
        let rollouts = writer_run(rtt, Work::Rollouts(n_rollouts)).await;
        rollouts.print(rtt_ms, "rollouts");
        let (plain_eps, plain_conns_per_op) = plain_run(rtt).await;
        eprintln!(
            "latency: {rtt_ms:>2} ms: plain {plain_eps:.1} events/s, \
             {plain_conns_per_op:.2} connections/operation"
        );
        rows.push(Row {
            rtt_ms,
            events,
            rollouts,
            plain_eps,
            plain_conns_per_op,
        });
    }
    let loopback = rows[0].events.events_per_sec;
    eprintln!();
    eprintln!(
        "| added RTT | writer events/s (small events) | s/batch | writer events/s (rollouts) \
         | plain events/s | writer/plain | writer vs its 0 ms rate \
         | TCP connections per writer batch (events, rollouts) | per plain operation |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} ms | {:.0} | {:.2} | {:.0} | {:.1} | {:.0}x | {:.2}x | {:.1}, {:.1} | {:.2} |",
            r.rtt_ms,
            r.events.events_per_sec,
            r.events.secs_per_batch,
            r.rollouts.events_per_sec,
            r.plain_eps,
            r.events.events_per_sec / r.plain_eps,
            r.events.events_per_sec / loopback,
            r.events.conns_per_batch,
            r.rollouts.conns_per_batch,
            r.plain_conns_per_op
        );
    }
    eprintln!(
        "(small events: {} from {PRODUCERS} producers; rollouts: {n_rollouts} \
         from {PRODUCERS} tracers, events counted, each rollout also writes {} other \
         operations; plain: one event after another)",
        writer_events(),
        workload::OPS_PER_ROLLOUT - workload::EVENTS_PER_ROLLOUT
    );
}
