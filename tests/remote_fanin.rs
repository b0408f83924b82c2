//! Fan-in: four processes, each with its own writer, write to one sqld.
//! Ids are unique, counts exact, and every id a process was handed holds
//! that process's row; a server kill and restart mid-stream loses nothing.
//!
//! Opt-in, like every remote test: see `tests/remote.rs` for how to run.
//! The children are this test binary again, running `fan_in_child`.
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use support::rows::{self, Tagged};
use support::sqld::{Sqld, Watchdog, FLUSH_PAST_A_WEDGE};
use trace_writer::*;

const CHILDREN: usize = 4;
const EVENTS_PER_CHILD: usize = 10_000;
const FLUSH_EVERY: usize = 250;
/// How long the server stays down, by repetition.
const DOWN_MS: [u64; 3] = [1_000, 3_000, 200];
/// Bounds the wait for the children; they finish in seconds when healthy.
const CHILDREN_DEADLINE: Duration = Duration::from_secs(600);

fn remote(url: String) -> StorageConfig {
    StorageConfig::turso(url, "")
}

/// The child: one writer, `TRACE_WRITER_FANIN_EVENTS` events tagged with
/// its number, a flush every `FLUSH_EVERY`. After each good flush it prints
/// `ACK id:i id:i …` for the events that flush acknowledged; a failed flush
/// prints `FLUSH_ERROR`, and the end prints `DONE` or `CLOSE_ERROR`.
#[test]
#[ignore = "child process of the fan-in tests; run by them (skip it with --skip _child)"]
fn fan_in_child() {
    let url = std::env::var("TRACE_WRITER_FANIN_URL")
        .expect("fan_in_child is the fan-in tests' child: run them with --skip _child");
    let child: usize = std::env::var("TRACE_WRITER_FANIN_CHILD")
        .unwrap()
        .parse()
        .unwrap();
    let events: usize = std::env::var("TRACE_WRITER_FANIN_EVENTS")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A flush outlasts the parent's restart of a wedged server (see
        // `finish`).
        let config = WriterConfig::default().flush_timeout(FLUSH_PAST_A_WEDGE);
        let writer = BufferedTraceWriter::new(remote(url), config)
            .await
            .expect("the child's writer opens");
        let sid = format!("child-{child}");
        writer
            .ensure_session(&sid, Utc::now(), &json!({"child": child}))
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..events {
            let id = writer
                .insert_event(&sid, None, &rows::tagged_event(child, i))
                .await
                .expect("insert_event queues");
            pending.push(format!("{id}:{i}"));
            if (i + 1) % FLUSH_EVERY == 0 || i + 1 == events {
                match writer.flush().await {
                    Ok(()) => {
                        println!("ACK {}", pending.join(" "));
                        pending.clear();
                    }
                    Err(e) => println!("FLUSH_ERROR {e}"),
                }
            }
        }
        let stats = writer.stats();
        match writer.close().await {
            Ok(()) => println!("DONE {stats:?}"),
            Err(e) => println!("CLOSE_ERROR {e}"),
        }
    });
}

/// What the parent learns from a child's output.
#[derive(Debug, Default)]
struct Report {
    acked: HashMap<i64, Tagged>,
    ack_lines: usize,
    errors: Vec<String>,
    done: Option<String>,
}

/// The children, killed on drop so a failing test leaves none behind.
struct Children {
    procs: Vec<Child>,
    readers: Vec<std::thread::JoinHandle<Report>>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts the children; each ACK line is announced on the returned channel
/// with its child's number.
fn spawn_children(url: &str) -> (Children, mpsc::Receiver<usize>) {
    let exe = std::env::current_exe().unwrap();
    let (tx, rx) = mpsc::channel();
    let mut children = Children {
        procs: Vec::new(),
        readers: Vec::new(),
    };
    for c in 0..CHILDREN {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "fan_in_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TRACE_WRITER_FANIN_URL", url)
            .env("TRACE_WRITER_FANIN_CHILD", c.to_string())
            .env("TRACE_WRITER_FANIN_EVENTS", EVENTS_PER_CHILD.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let tx = tx.clone();
        children.readers.push(std::thread::spawn(move || {
            let mut report = Report::default();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ACK ") {
                    for pair in line[at + 4..].split_whitespace() {
                        let (id, i) = pair.split_once(':').expect("id:i");
                        report.acked.insert(
                            id.parse().unwrap(),
                            Tagged {
                                source: c as i64,
                                i: i.parse().unwrap(),
                            },
                        );
                    }
                    report.ack_lines += 1;
                    let _ = tx.send(c);
                } else if let Some(at) = line.find("FLUSH_ERROR ").or(line.find("CLOSE_ERROR ")) {
                    report.errors.push(line[at..].to_string());
                } else if let Some(at) = line.find("DONE ") {
                    report.done = Some(line[at + 5..].to_string());
                }
            }
            report
        }));
        children.procs.push(child);
    }
    (children, rx)
}

/// Waits for every child to exit (bounded), then checks that each ran to
/// the end without an error and that the server holds exactly what they
/// were acknowledged, each once. Returns each child's retries.
///
/// Should no child acknowledge a flush for a while (see [`Watchdog`]), a
/// server that commits nothing is restarted and the run goes on; one that
/// commits fails the test, since the children are stuck.
async fn finish(
    mut children: Children,
    server: &mut Sqld,
    acks: &mpsc::Receiver<usize>,
    what: &str,
) -> Vec<u64> {
    let deadline = std::time::Instant::now() + CHILDREN_DEADLINE;
    let mut acked = 0;
    let mut watchdog = Watchdog::new(acked);
    for (c, proc) in children.procs.iter_mut().enumerate() {
        loop {
            if let Some(status) = proc.try_wait().unwrap() {
                assert!(status.success(), "{what}: child {c} exited with {status}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: child {c} still running after {CHILDREN_DEADLINE:?}"
            );
            acked += acks.try_iter().count() as u64;
            watchdog.check(acked, server, what).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let reports: Vec<Report> = children
        .readers
        .drain(..)
        .map(|r| r.join().unwrap())
        .collect();
    let mut acked = HashMap::new();
    for (c, r) in reports.iter().enumerate() {
        assert!(
            r.errors.is_empty(),
            "{what}: child {c} reported {} error(s), first: {}",
            r.errors.len(),
            r.errors[0]
        );
        assert!(r.done.is_some(), "{what}: child {c} did not finish");
        assert_eq!(
            r.acked.len(),
            EVENTS_PER_CHILD,
            "{what}: child {c} was handed an id twice or lost an acknowledgement"
        );
        let before = acked.len();
        acked.extend(r.acked.iter().map(|(id, t)| (*id, *t)));
        assert_eq!(
            acked.len(),
            before + EVENTS_PER_CHILD,
            "{what}: child {c} was handed ids another child also got"
        );
    }
    let check = LibsqlTraceStorage::new(remote(server.url())).await.unwrap();
    let stored = rows::stored(&check).await;
    rows::assert_exactly_once(what, &stored, &acked);
    for c in 0..CHILDREN {
        let rows = check
            .query(
                "SELECT COUNT(*) AS n FROM events WHERE session_id = ?",
                vec![json!(format!("child-{c}"))],
            )
            .await
            .unwrap();
        assert_eq!(
            rows[0]["n"].as_u64(),
            Some(EVENTS_PER_CHILD as u64),
            "{what}: child {c}'s session"
        );
    }
    check.close().await.unwrap();
    reports
        .iter()
        .map(|r| {
            let done = r.done.as_deref().unwrap_or_default();
            done.split("retries: ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// A fresh server with the schema in place before the children race.
async fn server_with_schema() -> Sqld {
    let server = Sqld::start().await;
    LibsqlTraceStorage::new(remote(server.url()))
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn four_processes_write_to_one_server() {
    let mut server = server_with_schema().await;
    let (children, acks) = spawn_children(&server.url());
    let retries = finish(children, &mut server, &acks, "fan-in").await;
    eprintln!(
        "fan-in: {CHILDREN} processes x {EVENTS_PER_CHILD} events, every id once and in place; \
         retries per child {retries:?}; wedged-server restarts {}",
        server.wedged_restarts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored"]
async fn four_processes_survive_a_server_restart_mid_stream() {
    support::sqld::binary();
    for run in 0..support::repeats() {
        let mut server = server_with_schema().await;
        let (children, acks) = spawn_children(&server.url());
        // Kill once every child has had some flushes acknowledged, a
        // varying number of them: the stream is under way in each.
        let per_child = 1 + support::jitter(8) as usize;
        let mut seen = [0usize; CHILDREN];
        while seen.iter().any(|&n| n < per_child) {
            let c = acks
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("run {run}: the children stopped acknowledging"));
            seen[c] += 1;
        }
        server.kill();
        let down = Duration::from_millis(DOWN_MS[run % DOWN_MS.len()]);
        tokio::time::sleep(down).await;
        server.restart().await;
        let what = format!(
            "run {run} (killed after {per_child} acknowledged flushes per child, down {down:?})"
        );
        let retries = finish(children, &mut server, &acks, &what).await;
        eprintln!(
            "fan-in restart: {what}: nothing lost, nothing doubled; retries per child \
             {retries:?}; wedged-server restarts {}",
            server.wedged_restarts()
        );
    }
}
