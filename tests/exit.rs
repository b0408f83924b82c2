//! Returning from `main` without `close()`: dropping the last handle commits
//! everything that was acknowledged before the process exits.
//!
//! The child is this test binary run again: it builds a runtime, writes from
//! 8 tasks, lets the writer go out of scope at the end of the async block,
//! drops the runtime and exits the process at once, which is exactly what
//! `#[tokio::main]` does when `main` returns.
mod common;

use std::process::Command;

use chrono::Utc;
use serde_json::json;
use trace_writer::*;

const TASKS: usize = 8;
const EVENTS: usize = 100_000;

#[test]
#[ignore = "child process of exit_without_close_*; run by those tests"]
fn exit_child() {
    let path = std::env::var("TRACE_WRITER_EXIT_DB").expect("TRACE_WRITER_EXIT_DB");
    let flavor = std::env::var("TRACE_WRITER_EXIT_FLAVOR").expect("TRACE_WRITER_EXIT_FLAVOR");
    let rt = match flavor.as_str() {
        "current_thread" => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .expect("runtime");
    let acked = rt.block_on(async move {
        let writer = BufferedTraceWriter::new(StorageConfig::file(path), WriterConfig::default())
            .await
            .expect("open");
        writer
            .ensure_session("exit", Utc::now(), &json!({}))
            .await
            .expect("session");
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = 0usize;
                for i in (t..EVENTS).step_by(TASKS) {
                    if w.insert_event("exit", None, &common::env_event(i))
                        .await
                        .is_ok()
                    {
                        acked += 1;
                    }
                }
                acked
            }));
        }
        let mut acked = 0;
        for t in tasks {
            acked += t.await.expect("task");
        }
        // No flush, no close: `writer` goes out of scope here.
        acked
    });
    println!("ACKED {acked}");
    drop(rt);
    std::process::exit(0);
}

fn run_child(flavor: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("exit.db");
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "exit_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TRACE_WRITER_EXIT_DB", &path)
        .env("TRACE_WRITER_EXIT_FLAVOR", flavor)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let acked: usize = stdout
        .lines()
        .find_map(|l| l.find("ACKED ").map(|at| &l[at + 6..]))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ACKED line in the child's output:\n{stdout}"));
    assert_eq!(acked, EVENTS, "every write was acknowledged");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let stored = rt.block_on(async {
        let plain = LibsqlTraceStorage::new_file(path.to_str().expect("utf-8"))
            .await
            .expect("open");
        let n = common::count(&plain, "events").await;
        plain.close().await.expect("close");
        n
    });
    assert_eq!(stored as usize, acked, "acknowledged events lost at exit");
}

#[test]
fn exit_without_close_from_a_multi_thread_runtime_loses_nothing() {
    run_child("multi_thread");
}

#[test]
fn exit_without_close_from_a_current_thread_runtime_loses_nothing() {
    run_child("current_thread");
}
