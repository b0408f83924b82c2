//! Many producers at once: 64 tasks and 4 plain threads, then several
//! processes on one file.
mod common;

use std::collections::HashSet;

use chrono::Utc;
use serde_json::json;
use trace_writer::*;

const TASKS: usize = 64;
const THREADS: usize = 4;
const EVENTS_EACH: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_and_threads_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    // Small batches and id blocks, so that batching and leasing both run
    // many times under contention.
    let config = WriterConfig::default().max_batch_ops(64).id_block(16);
    let writer = BufferedTraceWriter::new(StorageConfig::file(path.to_str().unwrap()), config)
        .await
        .unwrap();

    // Each producer writes events and a reward per event, and remembers
    // which event each reward belongs to.
    async fn produce(w: BufferedTraceWriter, p: usize) -> Vec<(i64, i64, i64)> {
        let sid = format!("p{p}");
        w.ensure_session(&sid, Utc::now(), &json!({}))
            .await
            .unwrap();
        let ts = w
            .ensure_timestep(&sid, &SessionTimeStep::new("t", 0))
            .await
            .unwrap();
        let mut out = Vec::new();
        for i in 0..EVENTS_EACH {
            let e = w
                .insert_event(&sid, Some(ts), &workload::small_event(p * 1000 + i))
                .await
                .unwrap();
            let reward = EventReward {
                reward_value: (p * 1000 + i) as f64,
                ..Default::default()
            };
            let r = w
                .insert_event_reward(&sid, e, None, None, &reward)
                .await
                .unwrap();
            out.push((e, r, (p * 1000 + i) as i64));
        }
        out
    }

    let mut tasks = Vec::new();
    for p in 0..TASKS {
        tasks.push(tokio::spawn(produce(writer.clone(), p)));
    }
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let handle = writer.blocking();
        threads.push(std::thread::spawn(move || {
            let p = TASKS + t;
            let sid = format!("p{p}");
            handle.ensure_session(&sid, Utc::now(), &json!({})).unwrap();
            let ts = handle
                .ensure_timestep(&sid, &SessionTimeStep::new("t", 0))
                .unwrap();
            let mut out = Vec::new();
            for i in 0..EVENTS_EACH {
                let e = handle
                    .insert_event(&sid, Some(ts), &workload::small_event(p * 1000 + i))
                    .unwrap();
                let reward = EventReward {
                    reward_value: (p * 1000 + i) as f64,
                    ..Default::default()
                };
                let r = handle
                    .insert_event_reward(&sid, e, None, None, &reward)
                    .unwrap();
                out.push((e, r, (p * 1000 + i) as i64));
            }
            handle.flush().unwrap();
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    for t in threads {
        all.extend(t.join().unwrap());
    }
    writer.flush().await.unwrap();

    let producers = TASKS + THREADS;
    let total = producers * EVENTS_EACH;
    assert_eq!(all.len(), total);
    let event_ids: HashSet<i64> = all.iter().map(|a| a.0).collect();
    let reward_ids: HashSet<i64> = all.iter().map(|a| a.1).collect();
    assert_eq!(event_ids.len(), total, "event ids are unique");
    assert_eq!(reward_ids.len(), total, "reward ids are unique");

    assert_eq!(common::count(&writer, "events").await, total as i64);
    assert_eq!(common::count(&writer, "event_rewards").await, total as i64);
    assert_eq!(
        common::count(&writer, "session_traces").await,
        producers as i64
    );
    assert_eq!(
        common::count(&writer, "session_timesteps").await,
        producers as i64
    );

    // Every reward points at the event the producer wrote it for: the
    // event's message_time carries the same number as the reward value.
    let rows = writer
        .query(
            "SELECT r.id AS rid, r.event_id AS eid, r.reward_value AS v, e.message_time AS m \
             FROM event_rewards r JOIN events e ON e.id = r.event_id",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), total);
    for row in &rows {
        assert_eq!(
            row["v"].as_f64().unwrap() as i64,
            row["m"].as_i64().unwrap()
        );
    }
    for (e, r, n) in &all {
        let row = rows
            .iter()
            .find(|row| row["rid"].as_i64() == Some(*r))
            .unwrap();
        assert_eq!(row["eid"].as_i64(), Some(*e));
        assert_eq!(row["m"].as_i64(), Some(*n));
    }
    let stats = writer.stats();
    assert_eq!(stats.committed, stats.enqueued);
    assert_eq!(stats.failed, 0);
    assert!(stats.id_leases > 5, "leases were renewed: {stats:?}");
    writer.close().await.unwrap();
}

/// A child process: writes `CHILD_EVENTS` events through its own writer and
/// prints the ids it got. Only runs when the parent test sets the variable.
#[test]
fn child_writer_process() {
    let Ok(path) = std::env::var("TRACE_WRITER_CHILD_DB") else {
        return;
    };
    let child: usize = std::env::var("TRACE_WRITER_CHILD_N")
        .unwrap()
        .parse()
        .unwrap();
    let writer = BufferedTraceWriter::new_blocking(
        StorageConfig::file(path),
        WriterConfig::default().id_block(8),
    )
    .unwrap();
    let h = writer.blocking();
    let sid = format!("proc-{child}");
    h.ensure_session(&sid, Utc::now(), &json!({})).unwrap();
    let mut ids = Vec::new();
    for i in 0..CHILD_EVENTS {
        ids.push(
            h.insert_event(&sid, None, &workload::small_event(i))
                .unwrap(),
        );
    }
    h.flush().unwrap();
    println!("IDS {}", serde_json::to_string(&ids).unwrap());
}

const CHILD_EVENTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_get_disjoint_ids_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi.db");
    // Create the schema first, and put a plain backend beside the writers.
    let plain = LibsqlTraceStorage::new_file(path.to_str().unwrap())
        .await
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|n| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "child_writer_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("TRACE_WRITER_CHILD_DB", &path)
                .env("TRACE_WRITER_CHILD_N", n.to_string())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut plain_ids = Vec::new();
    for i in 0..50 {
        plain_ids.push(
            plain
                .insert_event("plain", None, &workload::small_event(i))
                .await
                .unwrap(),
        );
    }
    let mut all: Vec<i64> = plain_ids.clone();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let at = text.find("IDS ").expect("the child printed its ids");
        let line = text[at + 4..].lines().next().unwrap();
        let ids: Vec<i64> = serde_json::from_str(line).unwrap();
        assert_eq!(ids.len(), CHILD_EVENTS);
        all.extend(ids);
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are disjoint across processes");
    let total = 3 * CHILD_EVENTS + 50;
    assert_eq!(common::count(&plain, "events").await, total as i64);
    let rows = plain
        .query("SELECT COUNT(DISTINCT id) AS n FROM events", vec![])
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], json!(total));
    plain.close().await.unwrap();
}
