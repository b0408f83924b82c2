//! Workloads shared by the criterion benches and the report example.
//!
//! Every run opens a fresh database, so runs do not see each other's rows.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trace_writer::workload::{self, OPS_PER_ROLLOUT};
use trace_writer::*;

/// Which database a run writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Memory,
    Wal,
    DeleteFull,
    /// The server named by `TRACE_WRITER_TEST_URL` (opt-in).
    Remote,
}

impl Db {
    pub const ALL: [Db; 3] = [Db::Memory, Db::Wal, Db::DeleteFull];

    pub fn label(self) -> &'static str {
        match self {
            Db::Memory => ":memory:",
            Db::Wal => "WAL file",
            Db::DeleteFull => "rollback FULL file",
            Db::Remote => "remote server",
        }
    }

    /// A fresh database: its config and the folder that must outlive it.
    pub fn fresh(self) -> (StorageConfig, Option<tempfile::TempDir>) {
        match self {
            Db::Memory => (StorageConfig::memory(), None),
            Db::Remote => {
                let (url, token) = remote_server().expect("TRACE_WRITER_TEST_URL is set");
                (StorageConfig::turso(url, token), None)
            }
            Db::Wal | Db::DeleteFull => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("bench.db");
                let mut config = StorageConfig::file(path.to_str().expect("utf-8 path"));
                if self == Db::DeleteFull {
                    config = config
                        .with_journal_mode(JournalMode::Delete)
                        .with_synchronous(Synchronous::Full);
                }
                (config, Some(dir))
            }
        }
    }
}

/// The opt-in remote server: `TRACE_WRITER_TEST_URL` and, if it needs one,
/// `TRACE_WRITER_TEST_TOKEN`.
pub fn remote_server() -> Option<(String, String)> {
    let url = std::env::var("TRACE_WRITER_TEST_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let token = std::env::var("TRACE_WRITER_TEST_TOKEN").unwrap_or_default();
    Some((url, token))
}

/// Who writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One statement per call.
    Plain,
    /// The buffered writer.
    Writer,
    /// The buffered writer with a Prometheus recorder bound to its metrics:
    /// what the metrics cost when someone collects them.
    WriterRecorded,
    /// The same rows with libsql directly: one prepared statement, one
    /// transaction per 1,000 rows, one thread, values built beforehand.
    Ceiling,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Plain => "plain",
            Backend::Writer => "writer",
            Backend::WriterRecorded => "writer + Prometheus recorder",
            Backend::Ceiling => "ceiling",
        }
    }
}

/// Which event rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// About 150 B: an environment step with a small metadata column.
    Small,
    /// LLM-call events with a ~400 B call record, alternating with
    /// environment steps with a state.
    Realistic,
}

impl Rows {
    pub fn label(self) -> &'static str {
        match self {
            Rows::Small => "small events",
            Rows::Realistic => "realistic events",
        }
    }

    pub fn event(self, i: usize) -> TracingEvent {
        match self {
            Rows::Small => workload::small_event(i),
            Rows::Realistic if i % 2 == 0 => workload::cais_event(i, i % 20),
            Rows::Realistic => workload::env_event(i % 20),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Operations written (trait calls, or rows for the ceiling).
    pub ops: usize,
    /// From the first call until everything was committed.
    pub elapsed: Duration,
    /// Per-call latency of enqueue calls, when recorded.
    pub latencies: Vec<Duration>,
    pub stats: Option<WriterStats>,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens the backend under test: the writer (also returned as itself, for
/// `flush()` and `stats()`) or the plain backend.
async fn open(
    backend: Backend,
    config: StorageConfig,
) -> (Option<BufferedTraceWriter>, Arc<dyn TraceStorage>) {
    match backend {
        Backend::Plain => (
            None,
            Arc::new(LibsqlTraceStorage::new(config).await.expect("open plain")),
        ),
        #[cfg(not(feature = "metrics"))]
        Backend::WriterRecorded => panic!("a writer with a recorder needs the `metrics` feature"),
        #[cfg(feature = "metrics")]
        Backend::WriterRecorded => {
            // The writer's metric handles bind to the recorder current when
            // it opens; a local one keeps the other cases' writers bare.
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let w = tokio::task::block_in_place(|| {
                metrics::with_local_recorder(&recorder, || {
                    BufferedTraceWriter::new_blocking(config, WriterConfig::default())
                })
            })
            .expect("open writer");
            (Some(w.clone()), Arc::new(w))
        }
        Backend::Writer | Backend::Ceiling => {
            let w = BufferedTraceWriter::new(config, WriterConfig::default())
                .await
                .expect("open writer");
            (Some(w.clone()), Arc::new(w))
        }
    }
}

/// Ends a timed run: waits until the writer has committed everything, stops
/// the clock, reads the writer's counters and closes the storage.
async fn finish(
    writer: Option<&BufferedTraceWriter>,
    storage: &dyn TraceStorage,
    started: Instant,
    ops: usize,
    latencies: Vec<Duration>,
) -> Outcome {
    if let Some(w) = writer {
        w.flush().await.expect("flush");
    }
    let elapsed = started.elapsed();
    let stats = writer.map(|w| w.stats());
    storage.close().await.expect("close");
    Outcome {
        ops,
        elapsed,
        latencies,
        stats,
    }
}

/// `total` events from `producers` concurrent tasks, each into its own
/// session. The writer's time includes the final flush.
pub async fn events(
    db: Db,
    backend: Backend,
    producers: usize,
    total: usize,
    rows: Rows,
    record_latency: bool,
) -> Outcome {
    if backend == Backend::Ceiling {
        return ceiling(db, total, rows).await;
    }
    let (config, _dir) = db.fresh();
    let (writer, storage) = open(backend, config).await;
    let per = total / producers;
    let prebuilt: Arc<Vec<TracingEvent>> = Arc::new((0..per).map(|i| rows.event(i)).collect());
    for p in 0..producers {
        storage
            .ensure_session(&format!("bench-{p}"), chrono::Utc::now(), &json!({}))
            .await
            .expect("session");
    }
    if let Some(w) = &writer {
        w.flush().await.expect("flush");
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let storage = storage.clone();
        let prebuilt = prebuilt.clone();
        tasks.push(tokio::spawn(async move {
            let sid = format!("bench-{p}");
            let mut lat = Vec::with_capacity(if record_latency { per } else { 0 });
            for e in prebuilt.iter() {
                let t = Instant::now();
                storage.insert_event(&sid, None, e).await.expect("insert");
                if record_latency {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    finish(
        writer.as_ref(),
        &*storage,
        started,
        per * producers,
        latencies,
    )
    .await
}

/// The same event rows as [`events`] writes, inserted with libsql directly.
async fn ceiling(db: Db, total: usize, rows: Rows) -> Outcome {
    // Let the plain backend produce the exact column values once, in memory.
    let scratch = LibsqlTraceStorage::new_memory().await.expect("scratch");
    let sample = 200.min(total);
    for i in 0..sample {
        scratch
            .insert_event("bench-0", None, &rows.event(i))
            .await
            .expect("scratch insert");
    }
    let sample_rows = scratch
        .query("SELECT * FROM events ORDER BY id", vec![])
        .await
        .expect("scratch rows");
    let columns: Vec<String> = sample_rows[0]
        .as_object()
        .expect("object row")
        .keys()
        .filter(|k| *k != "id")
        .cloned()
        .collect();
    let to_value = |v: &serde_json::Value| match v {
        serde_json::Value::Null => libsql::Value::Null,
        serde_json::Value::Number(n) if n.is_i64() => {
            libsql::Value::Integer(n.as_i64().unwrap_or(0))
        }
        serde_json::Value::Number(n) => libsql::Value::Real(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => libsql::Value::Text(s.clone()),
        other => libsql::Value::Text(other.to_string()),
    };
    let values: Vec<Vec<libsql::Value>> = (0..total)
        .map(|i| {
            let row = &sample_rows[i % sample];
            columns.iter().map(|c| to_value(&row[c.as_str()])).collect()
        })
        .collect();

    let (config, _dir) = db.fresh();
    let path = if db == Db::Memory {
        ":memory:".to_string()
    } else {
        config.db_url.clone()
    };
    let database = libsql::Builder::new_local(&path)
        .build()
        .await
        .expect("open");
    let conn = database.connect().expect("connect");
    if db != Db::Memory {
        let mode = if db == Db::Wal { "WAL" } else { "DELETE" };
        let sync = if db == Db::Wal { "NORMAL" } else { "FULL" };
        conn.query(&format!("PRAGMA journal_mode = {mode}"), ())
            .await
            .expect("journal");
        conn.execute(&format!("PRAGMA synchronous = {sync}"), ())
            .await
            .expect("sync");
    }
    schema::migrate(&conn).await.expect("schema");
    let sql = format!(
        "INSERT INTO events ({}) VALUES ({})",
        columns.join(", "),
        vec!["?"; columns.len()].join(", ")
    );
    let stmt = conn.prepare(&sql).await.expect("prepare");
    let started = Instant::now();
    for chunk in values.chunks(1000) {
        conn.execute("BEGIN", ()).await.expect("begin");
        for row in chunk {
            stmt.reset();
            stmt.execute(row.clone()).await.expect("insert");
        }
        stmt.reset();
        conn.execute("COMMIT", ()).await.expect("commit");
    }
    Outcome {
        ops: total,
        elapsed: started.elapsed(),
        ..Outcome::default()
    }
}

/// `count` realistic rollouts through `SessionTracer`, `concurrent` at once.
pub async fn rollouts(db: Db, backend: Backend, concurrent: usize, count: usize) -> Outcome {
    let (config, _dir) = db.fresh();
    let (writer, storage) = open(backend, config).await;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrent {
        let storage = storage.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let r = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if r >= count {
                    break;
                }
                let tracer = SessionTracer::new(storage.clone());
                workload::run_rollout(&tracer, r).await.expect("rollout");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    finish(
        writer.as_ref(),
        &*storage,
        started,
        count * OPS_PER_ROLLOUT,
        Vec::new(),
    )
    .await
}

/// Peak resident memory of this process, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak so the next reading covers only what follows.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `total` small events from 64 producers into a rollback-journal FULL file,
/// far faster than it commits, under a byte bound. Returns the outcome and
/// the peak RSS in bytes during the run.
pub async fn flood(total: usize, bound_bytes: usize) -> (Outcome, Option<u64>) {
    let (config, _dir) = Db::DeleteFull.fresh();
    let writer = BufferedTraceWriter::new(
        config,
        WriterConfig::default().queue_capacity_bytes(bound_bytes),
    )
    .await
    .expect("open writer");
    let producers = 64;
    let per = total / producers;
    let prebuilt: Arc<Vec<TracingEvent>> = Arc::new((0..256).map(workload::small_event).collect());
    reset_peak_rss();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let w = writer.clone();
        let prebuilt = prebuilt.clone();
        tasks.push(tokio::spawn(async move {
            let sid = format!("flood-{p}");
            for i in 0..per {
                w.insert_event(&sid, None, &prebuilt[i % prebuilt.len()])
                    .await
                    .expect("insert");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let outcome = finish(Some(&writer), &writer, started, per * producers, Vec::new()).await;
    // The high-water mark, so reading it after the close loses nothing.
    (outcome, peak_rss_bytes())
}

/// The `q` quantile of the latencies.
pub fn quantile(latencies: &mut [Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let idx = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[idx]
}

/// Enqueue latency at a steady load below capacity: `producers` tasks each
/// insert one small event every `interval`, `per_producer` times, into a
/// WAL file through the writer. Returns every call's latency.
pub async fn paced_latency(producers: usize, per_producer: usize, interval: Duration) -> Outcome {
    let (config, _dir) = Db::Wal.fresh();
    let writer = BufferedTraceWriter::new(config, WriterConfig::default())
        .await
        .expect("open writer");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let sid = format!("paced-{p}");
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut lat = Vec::with_capacity(per_producer);
            for i in 0..per_producer {
                ticker.tick().await;
                let e = workload::small_event(i);
                let t = Instant::now();
                w.insert_event(&sid, None, &e).await.expect("insert");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    finish(
        Some(&writer),
        &writer,
        started,
        producers * per_producer,
        latencies,
    )
    .await
}
