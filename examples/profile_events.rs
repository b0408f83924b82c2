//! Profiling aid: small events from N producers into a WAL file through the
//! writer (or the ceiling), for `perf record`.
//!
//! ```text
//! cargo run --release --example profile_events -- [writer|ceiling|plain] [producers] [events] [rollouts]
//! ```
#[path = "../benches/harness.rs"]
mod harness;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let backend = match args.get(1).map(String::as_str) {
        Some("ceiling") => harness::Backend::Ceiling,
        Some("plain") => harness::Backend::Plain,
        _ => harness::Backend::Writer,
    };
    let producers = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let events = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if args.get(4).map(String::as_str) == Some("rollouts") {
        let o = harness::rollouts(harness::Db::Wal, backend, producers, events).await;
        println!(
            "{:?} rollouts: {:.0} ops/s {:?}",
            backend,
            o.ops_per_sec(),
            o.stats
        );
        return;
    }
    let o = harness::events(
        harness::Db::Wal,
        backend,
        producers,
        events,
        harness::Rows::Small,
        false,
    )
    .await;
    println!("{:?}: {:.0} ops/s {:?}", backend, o.ops_per_sec(), o.stats);
}
