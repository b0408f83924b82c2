//! Writer and plain backend through the latency proxy at 0, 20, 50 and 100
//! ms of added round trip: events per second of small events, of a short
//! and a long run of tracer rollouts, each against its own 0 ms rate, the
//! short run's rate until its producers returned and its last commit, and
//! the TCP connections opened per writer batch and per plain operation.
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

use std::time::Duration;

use support::latency::{plain_run, writer_events, writer_run, Run, Work, LONG_ROLLOUTS, PRODUCERS};
use trace_writer::*;

const ROUND_TRIPS_MS: [u64; 4] = [0, 20, 50, 100];
/// Rollouts through the writer by default (`TRACE_WRITER_LATENCY_ROLLOUTS`),
/// from `PRODUCERS` concurrent tracers: 4,096 operations, half a remote
/// batch: at 100 ms its last round trip is most of the run.
const WRITER_ROLLOUTS: usize = 32;

fn writer_rollouts() -> usize {
    std::env::var("TRACE_WRITER_LATENCY_ROLLOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WRITER_ROLLOUTS)
}

fn print(run: &Run, rtt_ms: u64, what: &str) {
    eprintln!(
        "latency: {rtt_ms:>3} ms: writer, {what}: {:.0} events/s committed, {:.0} events/s \
         returned, last commit {:.2} s, {} batches, {:.2} s/batch, {:.1} connections/batch, \
         {} retries, {} lease waits",
        run.events_per_sec,
        run.returned_per_sec,
        run.last_commit_secs,
        run.batches,
        run.secs_per_batch,
        run.conns_per_batch,
        run.retries,
        run.lease_waits
    );
}

struct Row {
    rtt_ms: u64,
    events: Run,
    rollouts: Run,
    long: Run,
    provisional: Run,
    plain_eps: f64,
    plain_conns_per_op: f64,
}

/// `figure` of `row` and its ratio to the same figure at 0 ms.
fn against_loopback(rows: &[Row], row: &Row, figure: impl Fn(&Row) -> f64) -> String {
    format!("{:.0} | {:.2}", figure(row), figure(row) / figure(&rows[0]))
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
        print(&events, rtt_ms, "small events");
        let rollouts = writer_run(rtt, Work::Rollouts(n_rollouts)).await;
        print(&rollouts, rtt_ms, "rollouts");
        let long = writer_run(rtt, Work::Rollouts(LONG_ROLLOUTS)).await;
        print(&long, rtt_ms, &format!("{LONG_ROLLOUTS} rollouts"));
        let provisional = writer_run(rtt, Work::ProvisionalRollouts(n_rollouts)).await;
        print(&provisional, rtt_ms, "rollouts, provisional step ids");
        let (plain_eps, plain_conns_per_op) = plain_run(rtt).await;
        eprintln!(
            "latency: {rtt_ms:>3} ms: plain {plain_eps:.1} events/s, \
             {plain_conns_per_op:.2} connections/operation"
        );
        rows.push(Row {
            rtt_ms,
            events,
            rollouts,
            long,
            provisional,
            plain_eps,
            plain_conns_per_op,
        });
    }
    eprintln!();
    eprintln!(
        "| added RTT | small events, events/s | vs 0 ms | s/batch \
         | {n_rollouts} tracer rollouts, events/s | vs 0 ms | the same, until they returned | vs 0 ms \
         | last commit, s | {LONG_ROLLOUTS} tracer rollouts | vs 0 ms \
         | {n_rollouts}, provisional step ids | vs 0 ms | plain events/s | writer/plain \
         | TCP connections per writer batch (events, rollouts) | per plain operation |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        eprintln!(
            "| {} ms | {} | {:.2} | {} | {} | {:.2} | {} | {} | {:.1} | {:.0}x | {:.1}, {:.1} | {:.2} |",
            r.rtt_ms,
            against_loopback(&rows, r, |r| r.events.events_per_sec),
            r.events.secs_per_batch,
            against_loopback(&rows, r, |r| r.rollouts.events_per_sec),
            against_loopback(&rows, r, |r| r.rollouts.returned_per_sec),
            r.rollouts.last_commit_secs,
            against_loopback(&rows, r, |r| r.long.events_per_sec),
            against_loopback(&rows, r, |r| r.provisional.events_per_sec),
            r.plain_eps,
            r.events.events_per_sec / r.plain_eps,
            r.events.conns_per_batch,
            r.rollouts.conns_per_batch,
            r.plain_conns_per_op
        );
    }
    eprintln!(
        "(small events: {} from {PRODUCERS} producers; rollouts: from {PRODUCERS} tracers, \
         events counted, each rollout also writes {} other operations; events/s count until \
         a flush after the last call returned, \"until they returned\" until the last call \
         returned; plain: one event after another)",
        writer_events(),
        workload::OPS_PER_ROLLOUT - workload::EVENTS_PER_ROLLOUT
    );
}

/// Rollouts per tracer of the growth measurement: the database a run ends
/// with grows four times from the first to the last.
const GROWTH_PER_TRACER: [usize; 4] = [8, 16, 24, 32];

/// The loopback rollout rate as the database grows: each run on a fresh
/// sqld, `PRODUCERS` tracers each running 8, 16, 24 and 32 rollouts one
/// after another. Prints each rate and the rate at 32 against the rate at 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn rollout_rate_as_the_database_grows() {
    support::sqld::binary();
    let mut rates = Vec::new();
    for per_tracer in GROWTH_PER_TRACER {
        let run = writer_run(Duration::ZERO, Work::Rollouts(per_tracer * PRODUCERS)).await;
        print(&run, 0, &format!("{per_tracer} rollouts per tracer"));
        rates.push((per_tracer, run.events_per_sec));
    }
    eprintln!();
    eprintln!("| rollouts per tracer ({PRODUCERS} tracers) | events/s | vs 8 |");
    eprintln!("|---|---|---|");
    for (per_tracer, rate) in &rates {
        eprintln!("| {per_tracer} | {rate:.0} | {:.2} |", rate / rates[0].1);
    }
}
