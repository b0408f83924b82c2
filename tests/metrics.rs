//! The writer's metrics, scraped from a real Prometheus endpoint over HTTP
//! while a writer writes, and checked against the rows in the database.
#![cfg(feature = "metrics")]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::PrometheusBuilder;
use trace_writer::*;

/// One exporter per test binary (a process has one global recorder). It is
/// installed from a thread without a runtime, so it runs its HTTP listener
/// on a runtime of its own that outlives every test's.
fn endpoint() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        std::thread::spawn(move || {
            PrometheusBuilder::new()
                .with_http_listener(addr)
                .install()
                .unwrap()
        })
        .join()
        .unwrap();
        addr
    })
}

/// GETs `/metrics` with hyper's client and parses the plain samples
/// (`name{labels} value`) into a map keyed by `name{labels}`.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let uri: hyper::Uri = format!("http://{addr}/metrics").parse().unwrap();
    let mut last_err = None;
    // The listener starts on its own thread: give it a moment the first time.
    for _ in 0..50 {
        match hyper::Client::new().get(uri.clone()).await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                let body = hyper::body::to_bytes(resp.into_body()).await.unwrap();
                let text = String::from_utf8(body.to_vec()).unwrap();
                return text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .filter_map(|l| {
                        let (key, value) = l.rsplit_once(' ')?;
                        Some((key.to_owned(), value.parse().ok()?))
                    })
                    .collect();
            }
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no metrics endpoint at {addr}: {last_err:?}");
}

fn sample(samples: &HashMap<String, f64>, name: &str, writer: &str) -> f64 {
    let key = format!("{name}{{writer=\"{writer}\"}}");
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_counters_add_up_to_the_rows_in_the_database() {
    let addr = endpoint();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scraped.db");
    let w = BufferedTraceWriter::new(
        StorageConfig::file(path.to_str().unwrap()),
        WriterConfig::default().name("scrape-test"),
    )
    .await
    .unwrap();
    // A trigger refuses one event in ten: those are counted as refused.
    w.query(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.system_instance_id = 'poison' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        vec![],
    )
    .await
    .unwrap();

    let mut producers = Vec::new();
    for p in 0..4 {
        let w = w.clone();
        producers.push(tokio::spawn(async move {
            let session = format!("s{p}");
            w.ensure_session(&session, chrono::Utc::now(), &serde_json::json!({}))
                .await
                .unwrap();
            for i in 0..500 {
                let mut event = workload::small_event(i);
                if i % 10 == 0 {
                    if let TracingEvent::Environment(e) = &mut event {
                        e.base.system_instance_id = "poison".into();
                    }
                }
                w.insert_event(&session, None, &event).await.unwrap();
                if i == 250 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    // Scraped during the run: the endpoint answers and carries our writer.
    let during = scrape(addr).await;
    assert!(
        during.keys().any(|k| k.contains("writer=\"scrape-test\"")),
        "{during:?}"
    );
    for p in producers {
        p.await.unwrap();
    }
    let flushed = w.flush().await;
    assert!(
        matches!(flushed, Err(TracingError::WriteFailed { failed: 200, .. })),
        "{flushed:?}"
    );

    let after = scrape(addr).await;
    let rows = common::count(&w, "events").await + common::count(&w, "session_traces").await;
    let stats = w.stats();
    let get = |name| sample(&after, name, "scrape-test");
    assert_eq!(rows, 4 * 450 + 4);
    assert_eq!(get("trace_writer_committed_total"), rows as f64);
    assert_eq!(get("trace_writer_refused_total"), 200.0);
    assert_eq!(get("trace_writer_enqueued_total"), (rows + 200) as f64);
    assert_eq!(get("trace_writer_batches_total"), stats.batches as f64);
    assert_eq!(get("trace_writer_rejected_total"), 0.0);
    assert_eq!(get("trace_writer_spilled_total"), 0.0);
    assert_eq!(get("trace_writer_queue_depth"), 0.0);
    assert_eq!(get("trace_writer_queue_bytes"), 0.0);
    assert_eq!(get("trace_writer_batches_in_flight"), 0.0);
    assert!(get("trace_writer_processed_bytes_total") > 0.0);
    assert!(get("trace_writer_commit_duration_seconds_count") >= stats.batches as f64);
    assert!(get("trace_writer_batch_ops_sum") >= (rows + 200) as f64);
    w.close().await.unwrap();

    // The plain backend counts its calls under the database file's name.
    let plain_path = dir.path().join("plain-scraped.db");
    let plain = LibsqlTraceStorage::new_file(plain_path.to_str().unwrap())
        .await
        .unwrap();
    plain
        .ensure_session("p", chrono::Utc::now(), &serde_json::json!({}))
        .await
        .unwrap();
    for i in 0..7 {
        plain
            .insert_event("p", None, &workload::small_event(i))
            .await
            .unwrap();
    }
    let after = scrape(addr).await;
    assert_eq!(
        sample(
            &after,
            "trace_writer_plain_statements_total",
            "plain-scraped.db"
        ),
        8.0
    );
    assert_eq!(
        sample(
            &after,
            "trace_writer_plain_statement_duration_seconds_count",
            "plain-scraped.db"
        ),
        8.0
    );
}
