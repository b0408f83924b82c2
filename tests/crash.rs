//! SIGKILL at random moments: the database stays consistent and holds every
//! operation a completed `flush()` acknowledged.
mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use serde_json::json;
use trace_writer::*;

const ROUNDS: usize = 6;

/// The child: writes events in bursts, flushing after each, and prints how
/// many events were acknowledged. It runs until it is killed.
#[test]
#[ignore = "child process of sigkill_loses_nothing_acknowledged; run by it"]
fn crash_child() {
    let path = std::env::var("TRACE_WRITER_CRASH_DB").expect("TRACE_WRITER_CRASH_DB");
    let round = std::env::var("TRACE_WRITER_CRASH_ROUND").unwrap();
    let writer =
        BufferedTraceWriter::new_blocking(StorageConfig::file(path), WriterConfig::default())
            .unwrap();
    let h = writer.blocking();
    let sid = format!("crash-{round}");
    h.ensure_session(&sid, Utc::now(), &json!({})).unwrap();
    let mut acked = 0usize;
    for burst in 0.. {
        for i in 0..200 {
            h.insert_event(&sid, None, &workload::small_event(burst * 200 + i))
                .unwrap();
        }
        h.flush().unwrap();
        acked += 200;
        println!("ACK {acked}");
    }
}

fn pseudo_random_ms(round: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    50 + (nanos
        .wrapping_mul(2654435761)
        .wrapping_add(round as u64 * 97))
        % 450
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    // Create the schema before the children race to.
    LibsqlTraceStorage::new_file(path.to_str().unwrap())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = Vec::new();
    for round in 0..ROUNDS {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TRACE_WRITER_CRASH_DB", &path)
            .env("TRACE_WRITER_CRASH_ROUND", round.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The reader passes each acknowledgement on, so the kill timer can
        // start at the first one: every round then kills a writer that has
        // acknowledged something.
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<usize>();
        let reader = std::thread::spawn(move || {
            let mut last = 0usize;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ACK ") {
                    last = line[at + 4..].trim().parse().unwrap_or(last);
                    let _ = ack_tx.send(last);
                }
            }
            last
        });
        let first = ack_rx.recv_timeout(Duration::from_secs(120));
        assert!(
            first.is_ok(),
            "round {round}: the child acknowledged nothing"
        );
        std::thread::sleep(Duration::from_millis(pseudo_random_ms(round)));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(
            acked > 0,
            "round {round}: nothing acknowledged before the kill"
        );
        acked_total.push(acked);

        let plain = LibsqlTraceStorage::new_file(path.to_str().unwrap())
            .await
            .unwrap();
        let check = plain.query("PRAGMA integrity_check", vec![]).await.unwrap();
        assert_eq!(check[0]["integrity_check"], json!("ok"), "round {round}");
        let rows = plain
            .query(
                "SELECT COUNT(*) AS n FROM events WHERE session_id = ?",
                vec![json!(format!("crash-{round}"))],
            )
            .await
            .unwrap();
        let stored = rows[0]["n"].as_i64().unwrap() as usize;
        assert!(
            stored >= acked,
            "round {round}: {stored} stored < {acked} acknowledged"
        );
        // The ids stay unique across the killed writers.
        let dup = plain
            .query(
                "SELECT COUNT(*) - COUNT(DISTINCT id) AS d FROM events",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(dup[0]["d"], json!(0));
        plain.close().await.unwrap();
    }
    eprintln!("acknowledged per round before SIGKILL: {acked_total:?}");
}
