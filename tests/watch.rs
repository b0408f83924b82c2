//! `trace-writer watch`, run under a real pseudo-terminal (util-linux
//! `script`) while a writer fills the database.
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trace_writer::*;

const CLEAR: &str = "\x1b[H\x1b[2J";

/// The `events` count of each frame, in order.
fn event_counts(out: &str) -> Vec<i64> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("events")).then(|| words.next()?.parse().ok())?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_rows_growing_under_a_pty_and_never_blocks_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched.db");
    let w = BufferedTraceWriter::new(
        StorageConfig::file(path.to_str().unwrap()),
        WriterConfig::default(),
    )
    .await
    .unwrap();
    w.ensure_session("watched", chrono::Utc::now(), &serde_json::json!({}))
        .await
        .unwrap();
    w.flush().await.unwrap();

    // A producer that keeps committing while the view runs.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (w, stop) = (w.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    w.insert_event("watched", None, &workload::small_event(i))
                        .await
                        .unwrap();
                    i += 1;
                }
                w.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };

    let bin = env!("CARGO_BIN_EXE_trace-writer");
    let cmd = format!(
        "{bin} watch --db {} --interval 0.2 --count 8",
        path.to_str().unwrap()
    );
    // `script` gives the command a pseudo-terminal as its stdout.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .output()
            .expect("util-linux `script` runs")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = producer.await.unwrap();
    w.flush().await.unwrap();

    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A terminal gets frames that replace each other.
    assert_eq!(text.matches(CLEAR).count(), 8, "{text}");
    assert!(
        text.contains("session_traces") && text.contains("rows/s"),
        "{text}"
    );
    let counts = event_counts(&text);
    assert_eq!(counts.len(), 8, "{text}");
    assert!(counts.windows(2).all(|p| p[0] <= p[1]), "{counts:?}");
    assert!(
        counts[7] > counts[0],
        "the view saw no rows arrive: {counts:?}"
    );
    assert!(counts[7] as usize <= written, "{counts:?} > {written}");
    // Read-only: the writer never met a lock.
    let s = w.stats();
    assert_eq!((s.retries, s.failed), (0, 0), "{s:?}");
    assert_eq!(s.committed, written as u64 + 1);
    w.close().await.unwrap();
}

#[test]
fn watch_without_a_terminal_prints_plain_frames_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain-watch.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let w = BufferedTraceWriter::new(
            StorageConfig::file(path.to_str().unwrap()),
            WriterConfig::default(),
        )
        .await
        .unwrap();
        w.ensure_session("s", chrono::Utc::now(), &serde_json::json!({}))
            .await
            .unwrap();
        w.close().await.unwrap();
    });
    let bin = env!("CARGO_BIN_EXE_trace-writer");
    let out = Command::new(bin)
        .args([
            "watch",
            "--url", // the same option as `--db`
            path.to_str().unwrap(),
            "--interval",
            "0.05",
            "--count",
            "2",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(CLEAR), "{text}");
    assert_eq!(event_counts(&text), vec![0, 0]);
    assert_eq!(text.matches("session_traces").count(), 2);

    for bad in [
        vec!["watch", "--db", path.to_str().unwrap(), "--interval", "0"],
        vec!["watch", "--db", path.to_str().unwrap(), "--interval", "NaN"],
        vec!["watch", "--db", ":memory:", "--count", "1"],
        vec![
            "watch",
            "--db",
            dir.path().join("missing.db").to_str().unwrap(),
            "--count",
            "1",
        ],
    ] {
        let out = Command::new(bin).args(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
    // Nothing was created for the missing file.
    assert!(!dir.path().join("missing.db").exists());
}
