//! The latency measurement shared by `tests/remote_latency.rs` and the
//! report (`examples/report.rs`): the writer and the plain backend, each on
//! a fresh sqld of its own, through the proxy adding a round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trace_writer::*;

use super::proxy::Proxy;
use super::sqld::Sqld;

/// Concurrent producers of the writer runs.
pub const PRODUCERS: usize = 16;
/// Small events of a writer run by default (`TRACE_WRITER_LATENCY_EVENTS`):
/// sixteen full remote batches, so that the first ones (the id blocks are
/// still growing) and the last commit's round trip weigh little.
pub const WRITER_EVENTS: usize = 16 * trace_writer::writer::DEFAULT_REMOTE_MAX_BATCH_OPS;

/// `TRACE_WRITER_LATENCY_EVENTS`, or [`WRITER_EVENTS`].
pub fn writer_events() -> usize {
    std::env::var("TRACE_WRITER_LATENCY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITER_EVENTS)
}

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// No deadline on a flush: at 50 ms a slow writer takes minutes, and the
/// figure is what the measurement is for.
fn config() -> WriterConfig {
    WriterConfig::default().flush_timeout(Duration::MAX)
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

/// Tracer rollouts of a long run: sixteen per tracer, eight full remote
/// batches, so that the last commit's round trip weighs little.
pub const LONG_ROLLOUTS: usize = 512;

/// One writer run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// Events per second until the flush after the last write returned:
    /// every row committed.
    pub events_per_sec: f64,
    /// Events per second until the last producer's last call returned:
    /// the rate the producers saw, before the last batches committed.
    pub returned_per_sec: f64,
    /// Seconds from the last producer's return to the end of the flush.
    pub last_commit_secs: f64,
    pub secs_per_batch: f64,
    pub conns_per_batch: f64,
    pub batches: u64,
    pub retries: u64,
    /// Producers that found no id left and waited for a lease.
    pub lease_waits: u64,
}

/// What a writer run writes.
pub enum Work {
    /// [`writer_events`] small events from [`PRODUCERS`] producers.
    SmallEvents,
    /// This many rollouts from [`PRODUCERS`] tracers; their events count.
    Rollouts(usize),
    /// The same rollouts through a writer with
    /// [`WriterConfig::provisional_step_ids`] on.
    ProvisionalRollouts(usize),
}

/// The writer, on a server of its own, through a proxy adding `rtt`. Checks
/// that every row arrived, and that nothing failed.
pub async fn writer_run(rtt: Duration, work: Work) -> Run {
    let server = Sqld::start().await;
    let proxy = Proxy::start(server.addr(), rtt).await;
    let config = match work {
        Work::ProvisionalRollouts(_) => config().provisional_step_ids(true),
        _ => config(),
    };
    let writer = BufferedTraceWriter::new(remote(proxy.url()), config)
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
        Work::Rollouts(n) | Work::ProvisionalRollouts(n) => {
            rollouts(storage, n, PRODUCERS).await;
            n * workload::EVENTS_PER_ROLLOUT
        }
    };
    let returned = start.elapsed().as_secs_f64();
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
        returned_per_sec: written as f64 / returned,
        last_commit_secs: elapsed - returned,
        secs_per_batch: elapsed / batches.max(1) as f64,
        conns_per_batch: conns as f64 / batches.max(1) as f64,
        batches,
        retries: stats.retries - before.retries,
        lease_waits: stats.lease_waits - before.lease_waits,
    }
}

/// The plain backend, one event after another, on a server of its own
/// through a proxy adding `rtt`: events per second and TCP connections per
/// operation.
pub async fn plain_run(rtt: Duration) -> (f64, f64) {
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
