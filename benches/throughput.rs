//! Criterion throughput benches: events per second for the plain backend,
//! the writer and the ceiling (libsql directly, one prepared statement, one
//! transaction per 1,000 rows) on `:memory:`, a WAL file and a rollback
//! journal FULL file; the 64-rollout mix; and one sequential producer.
//!
//! ```text
//! cargo bench --bench throughput                 # everything
//! cargo bench --bench throughput -- 'events/WAL' # a subset
//! ```
//!
//! Each iteration opens a fresh database, so iterations are independent;
//! the time includes the writer's final flush (until committed). For one
//! quick table of all of it, run `cargo run --release --example report`.

#[path = "harness.rs"]
mod harness;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use harness::{Backend, Db, Rows};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn events(c: &mut Criterion) {
    let rt = runtime();
    for db in Db::ALL {
        let mut group = c.benchmark_group(format!("events/{}", db.label()));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        for (backend, producers, n) in [
            (Backend::Ceiling, 1, 20_000),
            (Backend::Writer, 1, 20_000),
            (Backend::Writer, 8, 20_000),
            (Backend::Writer, 64, 20_000),
            (
                Backend::Plain,
                1,
                if db == Db::DeleteFull { 200 } else { 4_000 },
            ),
            (
                Backend::Plain,
                8,
                if db == Db::DeleteFull { 200 } else { 4_000 },
            ),
            (
                Backend::Plain,
                64,
                if db == Db::DeleteFull { 256 } else { 4_096 },
            ),
        ] {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(
                BenchmarkId::new(backend.label(), producers),
                &(backend, producers, n),
                |b, &(backend, producers, n)| {
                    b.to_async(&rt)
                        .iter(|| harness::events(db, backend, producers, n, Rows::Small, false));
                },
            );
        }
        group.finish();
    }
    let mut group = c.benchmark_group("realistic events/WAL file");
    group.sample_size(10);
    for (backend, producers, n) in [
        (Backend::Ceiling, 1, 10_000),
        (Backend::Writer, 64, 10_000),
        (Backend::Plain, 64, 2_048),
    ] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(
            BenchmarkId::new(backend.label(), producers),
            &(backend, producers, n),
            |b, &(backend, producers, n)| {
                b.to_async(&rt).iter(|| {
                    harness::events(Db::Wal, backend, producers, n, Rows::Realistic, false)
                });
            },
        );
    }
    group.finish();
}

fn rollout_mix(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rollout mix/WAL file");
    group.sample_size(10);
    for (backend, count) in [(Backend::Writer, 64), (Backend::Plain, 64)] {
        group.throughput(Throughput::Elements(
            (count * trace_writer::workload::OPS_PER_ROLLOUT) as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new(backend.label(), 64),
            &backend,
            |b, &backend| {
                b.to_async(&rt)
                    .iter(|| harness::rollouts(Db::Wal, backend, 64, count));
            },
        );
    }
    group.finish();
}

fn single_producer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("single producer/WAL file");
    group.sample_size(10);
    for (backend, count) in [(Backend::Writer, 10), (Backend::Plain, 4)] {
        group.throughput(Throughput::Elements(
            (count * trace_writer::workload::OPS_PER_ROLLOUT) as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new(backend.label(), 1),
            &backend,
            |b, &backend| {
                b.to_async(&rt)
                    .iter(|| harness::rollouts(Db::Wal, backend, 1, count));
            },
        );
    }
    group.finish();
}

fn remote(c: &mut Criterion) {
    if harness::remote_server().is_none() {
        eprintln!("remote benches skipped: set TRACE_WRITER_TEST_URL to a libsql server");
        return;
    }
    let rt = runtime();
    let mut group = c.benchmark_group("rollout mix/remote server");
    group.sample_size(10);
    for (backend, producers, count) in [(Backend::Writer, 64, 64), (Backend::Plain, 16, 16)] {
        group.throughput(Throughput::Elements(
            (count * trace_writer::workload::OPS_PER_ROLLOUT) as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new(backend.label(), producers),
            &backend,
            |b, &backend| {
                b.to_async(&rt)
                    .iter(|| harness::rollouts(Db::Remote, backend, producers, count));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, events, rollout_mix, single_producer, remote);
criterion_main!(benches);
