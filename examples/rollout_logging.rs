//! The main job: many concurrent RL rollouts logged through `SessionTracer`.
//!
//! ```text
//! cargo run --release --example rollout_logging -- [--rollouts N] [--db PATH]
//!     [--backend writer|plain] [--journal wal|delete]
//!     [--metrics-addr 127.0.0.1:9000 [--metrics-hold SECS]]
//! ```
//!
//! By default 256 rollouts run at once on a multi-thread runtime, each a
//! realistic session (20 steps with an LLM call, an environment step and two
//! messages; an outcome reward and five event rewards), into `./traces.db`
//! through the buffered writer. `--backend plain` runs the same load on the
//! one-statement-per-call backend for comparison. `--metrics-addr` serves
//! the writer's metrics (see `trace_writer::writer::metrics`) at
//! `http://ADDR/metrics` for Prometheus while the job runs, and
//! `--metrics-hold` keeps serving them that many seconds after it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use trace_writer::workload::{self, EVENTS_PER_ROLLOUT, MESSAGES_PER_ROLLOUT, OPS_PER_ROLLOUT};
use trace_writer::{
    BufferedTraceWriter, JournalMode, LibsqlTraceStorage, SessionTracer, StorageConfig,
    Synchronous, TraceStorage, WriterConfig,
};

/// Rows are built on the rollouts' threads and freed on the writer's
/// thread. With 8,192 rollouts at once the system allocator spent about a
/// fifth of the rollouts' CPU in `_int_malloc` and its consolidation; with
/// mimalloc (as the Python extension uses) the process's user time fell from
/// 20 s to 12 s (docs/scale.md). A program of your own may use any allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    rollouts: usize,
    db: String,
    backend: String,
    journal: JournalMode,
    metrics_addr: Option<std::net::SocketAddr>,
    metrics_hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rollouts: 256,
        db: "traces.db".into(),
        backend: "writer".into(),
        journal: JournalMode::Wal,
        metrics_addr: None,
        metrics_hold: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--rollouts" => {
                args.rollouts = value()?.parse().map_err(|e| format!("--rollouts: {e}"))?
            }
            "--db" => args.db = value()?,
            "--backend" => args.backend = value()?,
            "--journal" => {
                args.journal = match value()?.as_str() {
                    "wal" => JournalMode::Wal,
                    "delete" => JournalMode::Delete,
                    other => return Err(format!("--journal: unknown mode `{other}`")),
                }
            }
            "--metrics-addr" => {
                let v = value()?;
                args.metrics_addr = Some(v.parse().map_err(|e| format!("--metrics-addr: {e}"))?)
            }
            "--metrics-hold" => {
                let secs: f64 = value()?
                    .parse()
                    .map_err(|e| format!("--metrics-hold: {e}"))?;
                args.metrics_hold =
                    Duration::try_from_secs_f64(secs).map_err(|e| format!("--metrics-hold: {e}"))?
            }
            "-h" | "--help" => {
                return Err("usage: rollout_logging [--rollouts N] [--db PATH] \
                            [--backend writer|plain] [--journal wal|delete] \
                            [--metrics-addr HOST:PORT [--metrics-hold SECS]]"
                    .into())
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if !matches!(args.backend.as_str(), "writer" | "plain") {
        return Err(format!(
            "--backend: expected writer or plain, got `{}`",
            args.backend
        ));
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), trace_writer::TracingError> {
    if let Some(addr) = args.metrics_addr {
        // Before the writer opens: its metric handles bind to the recorder
        // installed when it opens.
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| {
                trace_writer::TracingError::InvalidInput(format!("--metrics-addr {addr}: {e}"))
            })?;
        println!("serving metrics at http://{addr}/metrics");
    }
    let synchronous = match args.journal {
        JournalMode::Delete => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let config = StorageConfig::file(args.db.clone())
        .with_journal_mode(args.journal)
        .with_synchronous(synchronous);
    let mut writer = None;
    let storage: Arc<dyn TraceStorage> = if args.backend == "plain" {
        Arc::new(LibsqlTraceStorage::new(config).await?)
    } else {
        let w = BufferedTraceWriter::new(config, WriterConfig::default()).await?;
        writer = Some(w.clone());
        Arc::new(w)
    };
    let before = count_rows(&*storage).await?;

    let bar = ProgressBar::new(args.rollouts as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rollouts {per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));

    println!(
        "logging {} rollouts into {} through the {} backend ({:?})",
        args.rollouts, args.db, args.backend, args.journal
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..args.rollouts {
        let storage = storage.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let tracer = SessionTracer::new(storage);
            let result = workload::run_rollout(&tracer, r).await;
            bar.inc(1);
            result
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failed += 1;
                bar.println(format!("rollout failed: {e}"));
            }
            Err(e) => {
                failed += 1;
                bar.println(format!("rollout task panicked: {e}"));
            }
        }
    }
    let recorded = started.elapsed();
    if let Some(w) = &writer {
        bar.set_message("flushing");
        w.flush().await?;
    }
    let elapsed = started.elapsed();
    bar.finish_with_message("done");

    let after = count_rows(&*storage).await?;
    let written = [
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
    ];
    let ops = args.rollouts * OPS_PER_ROLLOUT;
    println!();
    println!("| what | count |");
    println!("|---|---|");
    println!("| sessions written | {} |", written[0]);
    println!("| events written | {} |", written[1]);
    println!("| messages written | {} |", written[2]);
    println!("| failed rollouts | {failed} |");
    println!(
        "| time: recording / until committed | {:.2} s / {:.2} s |",
        recorded.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "| throughput | {:.0} rollouts/s, {:.0} operations/s |",
        args.rollouts as f64 / elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64()
    );
    if let Some(w) = &writer {
        let s = w.stats();
        println!("| writer batches | {} |", s.batches);
        println!("| mean batch size | {:.1} operations |", s.mean_batch_ops());
        println!("| largest batch | {} operations |", s.max_batch_ops);
        println!(
            "| rejected / failed / retries | {} / {} / {} |",
            s.rejected, s.failed, s.retries
        );
    }
    let expected = [
        (args.rollouts - failed) as i64,
        ((args.rollouts - failed) * EVENTS_PER_ROLLOUT) as i64,
        ((args.rollouts - failed) * MESSAGES_PER_ROLLOUT) as i64,
    ];
    storage.close().await?;
    if args.metrics_addr.is_some() && !args.metrics_hold.is_zero() {
        println!("serving the final metrics for {:?}", args.metrics_hold);
        tokio::time::sleep(args.metrics_hold).await;
    }
    if written == expected && failed == 0 {
        println!("\ncheck: the database holds exactly the rows written ({written:?})");
        Ok(())
    } else {
        Err(trace_writer::TracingError::Internal(format!(
            "row counts {written:?} differ from the expected {expected:?}"
        )))
    }
}

async fn count_rows(storage: &dyn TraceStorage) -> Result<[i64; 3], trace_writer::TracingError> {
    let rows = storage
        .query(
            "SELECT (SELECT COUNT(*) FROM session_traces) AS s, \
                    (SELECT COUNT(*) FROM events) AS e, \
                    (SELECT COUNT(*) FROM messages) AS m",
            vec![],
        )
        .await?;
    let get = |k: &str| rows.first().and_then(|r| r[k].as_i64()).unwrap_or(0);
    Ok([get("s"), get("e"), get("m")])
}
