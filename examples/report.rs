//! The throughput report: runs each workload once and prints a markdown
//! table, the ratios against the targets, and an SVG chart.
//!
//! ```text
//! cargo run --release --example report -- [--out DIR]
//! ```
//!
//! With `--out DIR` it also writes `DIR/report.md` and `DIR/throughput.svg`.
//! It takes about a minute on a 2-core machine. `TRACE_WRITER_TEST_URL` adds
//! a rollout mix against a running libsql server; `TRACE_WRITER_SQLD` (a
//! sqld binary) adds the remote latency table, each run on a fresh server
//! through a proxy adding 0, 20 and 50 ms of round trip (about a minute
//! more).

#[path = "../benches/harness.rs"]
mod harness;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::Duration;

use harness::{Backend, Db, Outcome, Rows};

const FLOOD_EVENTS: usize = 1_000_000;
const FLOOD_BOUND: usize = 100 << 20;

fn run_flood_child() -> (Outcome, Option<u64>) {
    let failed = |why: String| {
        eprintln!("flood child failed: {why}");
        (Outcome::default(), None)
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed(e.to_string()),
    };
    let out = match std::process::Command::new(exe)
        .arg("--flood-child")
        .output()
    {
        Ok(o) => o,
        Err(e) => return failed(e.to_string()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("FLOOD ")) else {
        return failed(format!(
            "no result; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    };
    let nums: Vec<u128> = line[6..]
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    if nums.len() != 3 {
        return failed(format!("bad line `{line}`"));
    }
    (
        Outcome {
            ops: nums[0] as usize,
            elapsed: Duration::from_nanos(nums[1] as u64),
            ..Outcome::default()
        },
        (nums[2] > 0).then_some(nums[2] as u64),
    )
}

/// Rounds of every case; the table shows each case's median.
const ROUNDS: usize = 3;

/// One measured workload.
struct Case {
    workload: &'static str,
    db: Db,
    backend: Backend,
    producers: usize,
    count: usize,
    rows: Option<Rows>,
}

impl Case {
    fn events(db: Db, backend: Backend, producers: usize, count: usize, rows: Rows) -> Self {
        Case {
            workload: rows.label(),
            db,
            backend,
            producers,
            count,
            rows: Some(rows),
        }
    }

    fn rollouts(
        workload: &'static str,
        db: Db,
        backend: Backend,
        producers: usize,
        count: usize,
    ) -> Self {
        Case {
            workload,
            db,
            backend,
            producers,
            count,
            rows: None,
        }
    }

    async fn run(&self) -> Outcome {
        match self.rows {
            Some(rows) => {
                // Enqueue latency is recorded for the writer on the WAL file.
                let record =
                    self.backend == Backend::Writer && self.db == Db::Wal && self.producers == 64;
                harness::events(
                    self.db,
                    self.backend,
                    self.producers,
                    self.count,
                    rows,
                    record,
                )
                .await
            }
            None => harness::rollouts(self.db, self.backend, self.producers, self.count).await,
        }
    }
}

struct Row {
    workload: String,
    db: &'static str,
    backend: &'static str,
    producers: usize,
    outcome: Outcome,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}; load average at start {load}")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut out_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out_dir = args.next(),
            "--flood-child" => {
                // Run alone in a fresh process, so its peak RSS is its own.
                let (o, rss) = harness::flood(FLOOD_EVENTS, FLOOD_BOUND).await;
                println!(
                    "FLOOD {} {} {}",
                    o.ops,
                    o.elapsed.as_nanos(),
                    rss.unwrap_or(0)
                );
                return;
            }
            other => {
                eprintln!("unknown argument `{other}`; usage: report [--out DIR]");
                std::process::exit(2);
            }
        }
    }
    let machine = machine();
    eprintln!("machine: {machine}");
    // Every case runs ROUNDS times, round-robin, so that a noisy moment on
    // this shared machine hits all backends alike; the table keeps each
    // case's median run.
    let mut cases: Vec<Case> = Vec::new();
    for db in Db::ALL {
        let plain_n = if db == Db::DeleteFull { 400 } else { 10_000 };
        cases.push(Case::events(db, Backend::Ceiling, 1, 100_000, Rows::Small));
        for producers in [1, 8, 64] {
            cases.push(Case::events(
                db,
                Backend::Writer,
                producers,
                100_000,
                Rows::Small,
            ));
        }
        if db == Db::Wal {
            // What collecting the metrics costs (see the targets).
            cases.push(Case::events(
                db,
                Backend::WriterRecorded,
                64,
                100_000,
                Rows::Small,
            ));
        }
        for producers in [1, 64] {
            cases.push(Case::events(
                db,
                Backend::Plain,
                producers,
                plain_n,
                Rows::Small,
            ));
        }
    }
    cases.push(Case::events(
        Db::Wal,
        Backend::Ceiling,
        1,
        30_000,
        Rows::Realistic,
    ));
    cases.push(Case::events(
        Db::Wal,
        Backend::Writer,
        64,
        30_000,
        Rows::Realistic,
    ));
    cases.push(Case::events(
        Db::Wal,
        Backend::Plain,
        64,
        6_400,
        Rows::Realistic,
    ));
    for db in [Db::Wal, Db::Memory] {
        cases.push(Case::rollouts("rollout mix", db, Backend::Writer, 64, 128));
        cases.push(Case::rollouts("rollout mix", db, Backend::Plain, 64, 64));
    }
    cases.push(Case::rollouts(
        "single producer",
        Db::Wal,
        Backend::Writer,
        1,
        30,
    ));
    cases.push(Case::rollouts(
        "single producer",
        Db::Wal,
        Backend::Plain,
        1,
        8,
    ));
    if harness::remote_server().is_some() {
        cases.push(Case::rollouts(
            "rollout mix",
            Db::Remote,
            Backend::Writer,
            64,
            64,
        ));
        cases.push(Case::rollouts(
            "rollout mix",
            Db::Remote,
            Backend::Plain,
            16,
            16,
        ));
    } else {
        eprintln!("remote server: skipped (set TRACE_WRITER_TEST_URL to include one)");
    }

    let mut runs: Vec<Vec<Outcome>> = vec![Vec::new(); cases.len()];
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        for (case, out) in cases.iter().zip(runs.iter_mut()) {
            let o = case.run().await;
            eprintln!(
                "{:>18} {:>20} {:>8} x{:<3} {:>12.0} ops/s",
                case.workload,
                case.db.label(),
                case.backend.label(),
                case.producers,
                o.ops_per_sec()
            );
            out.push(o);
        }
    }
    let mut rows: Vec<Row> = cases
        .iter()
        .zip(runs)
        .map(|(case, mut outs)| {
            outs.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
            let median = outs.swap_remove(outs.len() / 2);
            Row {
                workload: case.workload.to_string(),
                db: case.db.label(),
                backend: case.backend.label(),
                producers: case.producers,
                outcome: median,
            }
        })
        .collect();

    // Enqueue latency at a steady load below capacity: 64 producers, one
    // event every 2 ms each (about 32,000 events/s in all).
    let mut paced = harness::paced_latency(64, 1000, Duration::from_millis(2)).await;
    let p50 = harness::quantile(&mut paced.latencies, 0.5);
    let p99 = harness::quantile(&mut paced.latencies, 0.99);
    eprintln!("steady enqueue latency: p50 {p50:?} p99 {p99:?}");

    // A flood far faster than the disk, under a 100 MB byte bound, in a
    // process of its own.
    let (flood, rss) = run_flood_child();
    eprintln!(
        "flood: {:.0} events/s, peak RSS {:?}",
        flood.ops_per_sec(),
        rss
    );

    let latency = remote_latency().await;

    let steady = (p50, p99, paced.ops_per_sec());
    let mut report = render(&machine, &mut rows, &flood, rss, FLOOD_BOUND, steady);
    render_latency(&mut report, &latency);
    println!("{report}");
    if let Some(dir) = out_dir {
        let dir = std::path::Path::new(&dir);
        if let Err(e) = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(dir.join("report.md"), &report))
            .and_then(|_| std::fs::write(dir.join("throughput.svg"), svg(&rows)))
        {
            eprintln!("cannot write the report files: {e}");
            std::process::exit(1);
        }
        eprintln!("wrote {}/report.md and throughput.svg", dir.display());
    }
}

/// Tracer rollouts per short remote run: two per tracer, 4,096 operations,
/// half a remote batch.
const ROLLOUTS_AT_A_DISTANCE: usize = 32;

/// Added round trips of the remote latency table, in milliseconds.
const ROUND_TRIPS_MS: [u64; 4] = [0, 20, 50, 100];

/// One row of the remote latency table: medians of [`ROUNDS`] runs.
struct Latency {
    rtt_ms: u64,
    writer: support::latency::Run,
    /// Tracer rollouts through the writer (`Work::Rollouts`).
    rollouts: support::latency::Run,
    /// The same with `WriterConfig::provisional_step_ids`.
    provisional: support::latency::Run,
    /// [`support::latency::LONG_ROLLOUTS`] tracer rollouts.
    long: support::latency::Run,
    plain_eps: f64,
    plain_conns_per_op: f64,
}

/// The writer and the plain backend through the latency proxy, each run on
/// a fresh sqld, round-robin over the round trips; empty without
/// `TRACE_WRITER_SQLD`.
async fn remote_latency() -> Vec<Latency> {
    use support::latency::{plain_run, writer_run, Work, LONG_ROLLOUTS};
    if std::env::var_os("TRACE_WRITER_SQLD").is_none() {
        eprintln!("remote latency: skipped (set TRACE_WRITER_SQLD to a sqld binary to include it)");
        return Vec::new();
    }
    type Runs = (
        support::latency::Run,
        support::latency::Run,
        support::latency::Run,
        (f64, f64),
        support::latency::Run,
    );
    let mut runs: Vec<Vec<Runs>> = ROUND_TRIPS_MS.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        eprintln!("remote latency, round {} of {ROUNDS}", round + 1);
        for (&ms, out) in ROUND_TRIPS_MS.iter().zip(runs.iter_mut()) {
            let rtt = Duration::from_millis(ms);
            let writer = writer_run(rtt, Work::SmallEvents).await;
            let rollouts = writer_run(rtt, Work::Rollouts(ROLLOUTS_AT_A_DISTANCE)).await;
            let provisional =
                writer_run(rtt, Work::ProvisionalRollouts(ROLLOUTS_AT_A_DISTANCE)).await;
            let long = writer_run(rtt, Work::Rollouts(LONG_ROLLOUTS)).await;
            let plain = plain_run(rtt).await;
            eprintln!(
                "{ms:>3} ms: writer {:.0} events/s, rollouts {:.0} events/s, provisional {:.0} \
                 events/s, {LONG_ROLLOUTS} rollouts {:.0} events/s, plain {:.1} events/s",
                writer.events_per_sec,
                rollouts.events_per_sec,
                provisional.events_per_sec,
                long.events_per_sec,
                plain.0
            );
            out.push((writer, rollouts, provisional, plain, long));
        }
    }
    ROUND_TRIPS_MS
        .iter()
        .zip(runs)
        .map(|(&rtt_ms, runs)| {
            let (plain_eps, plain_conns_per_op) = median_by(&runs, |r| r.3 .0).3;
            Latency {
                rtt_ms,
                writer: median_by(&runs, |r| r.0.events_per_sec).0,
                rollouts: median_by(&runs, |r| r.1.events_per_sec).1,
                provisional: median_by(&runs, |r| r.2.events_per_sec).2,
                long: median_by(&runs, |r| r.4.events_per_sec).4,
                plain_eps,
                plain_conns_per_op,
            }
        })
        .collect()
}

/// The one of `runs` (not empty) whose `key` is the median.
fn median_by<T: Copy>(runs: &[T], key: impl Fn(&T) -> f64) -> T {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted[sorted.len() / 2]
}

/// One of a row's writer rates.
type Rate = fn(&Latency) -> f64;

/// The remote table's writer rates, in its column order, each named as in
/// the targets.
const REMOTE_RATES: [(&str, Rate); 5] = [
    ("small events", |l| l.writer.events_per_sec),
    ("tracer rollouts", |l| l.rollouts.events_per_sec),
    ("tracer rollouts until they returned", |l| {
        l.rollouts.returned_per_sec
    }),
    ("tracer rollouts with provisional step ids", |l| {
        l.provisional.events_per_sec
    }),
    ("the long run of tracer rollouts", |l| l.long.events_per_sec),
];

/// Appends the remote latency table and its targets to the report.
fn render_latency(s: &mut String, rows: &[Latency]) {
    let Some(loopback) = rows.iter().find(|r| r.rtt_ms == 0) else {
        return;
    };
    let base = loopback.writer.events_per_sec;
    let _ = writeln!(
        s,
        "\nRemote server (sqld on loopback, a fresh one per run) through a proxy adding a round \
         trip. Small events: the writer writes {} events from {} producers. Tracer rollouts: \
         {ROLLOUTS_AT_A_DISTANCE} rollouts from {} `SessionTracer`s over one writer, each \
         rollout {} events (counted) and {} other operations. The plain backend writes one \
         event after another. \"provisional\" is the rollouts through a writer with \
         `WriterConfig::provisional_step_ids`. Rates count until a flush after the last call \
         returned, so every row is committed; \"returned\" counts only until the last call \
         returned, the rate the rollouts saw. The long run is {} rollouts. Medians of {ROUNDS} \
         runs:\n",
        support::latency::writer_events(),
        support::latency::PRODUCERS,
        support::latency::PRODUCERS,
        trace_writer::workload::EVENTS_PER_ROLLOUT,
        trace_writer::workload::OPS_PER_ROLLOUT - trace_writer::workload::EVENTS_PER_ROLLOUT,
        support::latency::LONG_ROLLOUTS
    );
    let _ = writeln!(s, "| added round trip | small events, writer events/s | vs 0 ms | tracer rollouts, writer events/s | vs 0 ms | returned, events/s | vs 0 ms | provisional events/s | vs 0 ms | long run, events/s | vs 0 ms | plain events/s | writer/plain | s per writer batch | TCP connections per writer batch | per plain operation |");
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = write!(s, "| {} ms |", r.rtt_ms);
        for (_, rate) in REMOTE_RATES {
            let _ = write!(s, " {:.0} | {:.2} |", rate(r), rate(r) / rate(loopback));
        }
        let _ = writeln!(
            s,
            " {:.1} | {:.0}× | {:.3} | {:.1} | {:.2} |",
            r.plain_eps,
            r.writer.events_per_sec / r.plain_eps,
            r.writer.secs_per_batch,
            r.writer.conns_per_batch,
            r.plain_conns_per_op
        );
    }
    let _ = writeln!(s, "\n| target | measured | wanted | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let mut target = |name: &str, got: f64, want: f64| {
        let met = if got >= want { "yes" } else { "no" };
        let _ = writeln!(s, "| {name} | {got:.2} | ≥ {want} | {met} |");
    };
    target(
        "remote, loopback: writer/plain",
        base / loopback.plain_eps,
        20.0,
    );
    if let Some(r) = rows.iter().find(|r| r.rtt_ms == 20) {
        target(
            "remote, 20 ms round trip: writer/plain",
            r.writer.events_per_sec / r.plain_eps,
            500.0,
        );
        target(
            "remote, 20 ms round trip: writer vs its loopback rate",
            r.writer.events_per_sec / base,
            0.8,
        );
    }
    if let Some(r) = rows.iter().find(|r| r.rtt_ms == 100) {
        for (name, rate) in REMOTE_RATES {
            target(
                &format!("remote, 100 ms round trip: {name} vs the loopback rate"),
                rate(r) / rate(loopback),
                0.8,
            );
        }
    }
}

fn find<'a>(
    rows: &'a [Row],
    workload: &str,
    db: &str,
    backend: &str,
    producers: usize,
) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.workload == workload && r.db == db && r.backend == backend && r.producers == producers
    })
}

fn rate(rows: &[Row], workload: &str, db: Db, backend: Backend, producers: usize) -> f64 {
    find(rows, workload, db.label(), backend.label(), producers)
        .map_or(f64::NAN, |r| r.outcome.ops_per_sec())
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn render(
    machine: &str,
    rows: &mut [Row],
    flood: &Outcome,
    rss: Option<u64>,
    bound: usize,
    steady: (Duration, Duration, f64),
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Machine: {machine}.\n");
    let _ = writeln!(s, "| workload | database | backend | producers | ops/s | writer/plain | writer/ceiling | enqueue p50 / p99 (saturated) | mean batch |");
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---|---:|");
    let snapshot: Vec<(String, &'static str, &'static str, usize, f64)> = rows
        .iter()
        .map(|r| {
            (
                r.workload.clone(),
                r.db,
                r.backend,
                r.producers,
                r.outcome.ops_per_sec(),
            )
        })
        .collect();
    for r in rows.iter_mut() {
        let ops = r.outcome.ops_per_sec();
        let (mut vs_plain, mut vs_ceiling, mut lat, mut batch) =
            (String::new(), String::new(), String::new(), String::new());
        if r.backend == "writer" {
            let best_plain = snapshot
                .iter()
                .filter(|x| {
                    x.0 == r.workload
                        && x.1 == r.db
                        && x.2 == "plain"
                        && (x.3 == r.producers || r.workload != "small events")
                })
                .map(|x| x.4)
                .fold(f64::NAN, f64::max);
            if best_plain.is_finite() {
                vs_plain = format!("{:.1}×", ops / best_plain);
            }
            if let Some(c) = snapshot
                .iter()
                .find(|x| x.0 == r.workload && x.1 == r.db && x.2 == "ceiling")
            {
                vs_ceiling = format!("{:.2}", ops / c.4);
            }
            if !r.outcome.latencies.is_empty() {
                let p50 = harness::quantile(&mut r.outcome.latencies, 0.5);
                let p99 = harness::quantile(&mut r.outcome.latencies, 0.99);
                lat = format!("{} / {}", micros(p50), micros(p99));
            }
            if let Some(st) = r.outcome.stats {
                batch = format!("{:.0}", st.mean_batch_ops());
            }
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            r.workload, r.db, r.backend, r.producers, ops, vs_plain, vs_ceiling, lat, batch
        );
    }
    let peak = rss.map_or("unknown".to_string(), |b| {
        format!("{:.0} MB", b as f64 / 1e6)
    });
    let _ = writeln!(
        s,
        "\nFlood: {} small events from 64 producers into a rollback-journal FULL file under a {} MB byte bound: {:.0} events/s, peak RSS {} (target: at most {} MB).\n",
        flood.ops,
        bound >> 20,
        flood.ops_per_sec(),
        peak,
        (bound >> 20) + 50
    );

    // Each target: its name, the workload and database, the producers of
    // the writer and of what it is compared with, and the ratio wanted.
    let small = "small events";
    #[rustfmt::skip]
    let targets = [
        ("WAL, 64 producers, small events: writer/ceiling", small, Db::Wal, 64, Backend::Ceiling, 1, 0.9),
        ("WAL, 64 producers, realistic events: writer/ceiling", "realistic events", Db::Wal, 64, Backend::Ceiling, 1, 0.9),
        ("WAL, 64 producers, small events: writer/plain", small, Db::Wal, 64, Backend::Plain, 64, 7.0),
        ("rollback FULL, 64 producers: writer/ceiling", small, Db::DeleteFull, 64, Backend::Ceiling, 1, 0.9),
        ("rollback FULL, 64 producers: writer/plain", small, Db::DeleteFull, 64, Backend::Plain, 64, 100.0),
        (":memory:, 64 producers: writer/plain", small, Db::Memory, 64, Backend::Plain, 64, 3.0),
        ("single SessionTracer producer on WAL: writer/plain", "single producer", Db::Wal, 1, Backend::Plain, 1, 5.0),
    ];
    let _ = writeln!(s, "| target | measured | wanted | met |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    for (name, workload, db, producers, base, base_producers, want) in targets {
        let got = rate(rows, workload, db, Backend::Writer, producers)
            / rate(rows, workload, db, base, base_producers);
        let _ = writeln!(
            s,
            "| {name} | {got:.2} | ≥ {want} | {} |",
            if got >= want { "yes" } else { "no" }
        );
    }
    let got = rate(rows, small, Db::Wal, Backend::WriterRecorded, 64)
        / rate(rows, small, Db::Wal, Backend::Writer, 64);
    let _ = writeln!(
        s,
        "| WAL, 64 producers, small events: writer with a Prometheus recorder / without | {got:.2} | ≥ 0.97 | {} |",
        if got >= 0.97 { "yes" } else { "no" }
    );
    let (p50, p99, rate) = steady;
    let _ = writeln!(
        s,
        "| enqueue p99 at steady state (64 producers, {rate:.0} events/s in all; p50 {}) | {} | ≤ 20 µs | {} |",
        micros(p50),
        micros(p99),
        if p99 <= Duration::from_micros(20) { "yes" } else { "no" }
    );
    if let Some(b) = rss {
        let limit = bound as u64 + (50 << 20);
        let _ = writeln!(
            s,
            "| flood peak RSS | {:.0} MB | ≤ {} MB | {} |",
            b as f64 / 1e6,
            limit >> 20,
            if b <= limit { "yes" } else { "no" }
        );
    }
    s
}

/// A bar chart of ops/s on a log scale, one group per workload and database.
fn svg(rows: &[Row]) -> String {
    let bar_h = 16.0;
    let gap = 6.0;
    let left = 330.0;
    let width = 980.0;
    let max_log = rows
        .iter()
        .map(|r| r.outcome.ops_per_sec().log10())
        .fold(1.0f64, f64::max)
        .ceil();
    let scale = (width - left - 120.0) / max_log;
    let color = |b: &str| match b {
        "writer" => "#2a7de1",
        "plain" => "#e0602a",
        _ => "#7a7a7a",
    };
    let mut body = String::new();
    let mut y = 40.0;
    let mut last_group = String::new();
    for r in rows {
        let group = format!("{} · {}", r.workload, r.db);
        if group != last_group {
            y += gap * 2.0;
            let _ = writeln!(
                body,
                r#"<text x="10" y="{:.0}" font-weight="bold">{group}</text>"#,
                y + 12.0
            );
            last_group = group;
        }
        let v = r.outcome.ops_per_sec();
        let w = (v.max(1.0).log10() * scale).max(1.0);
        let label = format!("{} ×{}", r.backend, r.producers);
        let _ = writeln!(
            body,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{label}</text>"#,
            left - 8.0,
            y + 12.0
        );
        let _ = writeln!(
            body,
            r#"<rect x="{left}" y="{y:.0}" width="{w:.1}" height="{bar_h}" fill="{}"/>"#,
            color(r.backend)
        );
        let _ = writeln!(
            body,
            r#"<text x="{:.0}" y="{:.0}">{v:.0}/s</text>"#,
            left + w + 6.0,
            y + 12.0
        );
        y += bar_h + gap;
    }
    let mut grid = String::new();
    for p in 1..=(max_log as i32) {
        let x = left + p as f64 * scale;
        let _ = writeln!(
            grid,
            r##"<line x1="{x:.1}" y1="30" x2="{x:.1}" y2="{:.0}" stroke="#ddd"/><text x="{x:.1}" y="24" text-anchor="middle" fill="#888">1e{p}</text>"##,
            y
        );
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="16" font-size="14" font-weight="bold">trace-writer: operations per second (log scale); blue writer, orange plain, grey ceiling</text>
{grid}{body}</svg>
"#,
        y + 20.0
    )
}
