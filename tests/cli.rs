//! The `trace-writer` binary, run as a process against real database files.
mod common;

use common::Lock;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use trace_writer::*;

/// Runs the binary with `args`; no token from the caller's environment.
fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trace-writer"))
        .args(args)
        .env_remove("TRACE_WRITER_AUTH_TOKEN")
        .env_remove("LIBSQL_AUTH_TOKEN")
        .env_remove("TURSO_AUTH_TOKEN")
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams if it is wrong.
fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The number after `name:` on the first line that starts with it.
fn field(out: &str, name: &str) -> Option<i64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The whitespace-separated words of the first line whose first word is `first`.
fn row<'a>(out: &'a str, first: &str) -> Option<Vec<&'a str>> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A file database with sessions `a` (2 steps: 7 events, 5 messages) and `b`
/// (1 step: 4 events, 3 messages), one outcome reward and two event rewards.
async fn sample_db(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("traces.db");
    let storage = LibsqlTraceStorage::new_file(s(&path)).await.unwrap();
    let mut a = common::sample_trace("a", 2);
    a.created_at = Utc::now() - chrono::Duration::seconds(60);
    let events = common::write_trace(&storage, &a).await;
    common::write_trace(&storage, &common::sample_trace("b", 1)).await;
    storage
        .insert_outcome_reward(
            "a",
            &OutcomeReward {
                total_reward: 1.0,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for e in &events[..2] {
        storage
            .insert_event_reward("a", *e, None, None, &EventReward::default())
            .await
            .unwrap();
    }
    storage.close().await.unwrap();
    path
}

/// Runs raw SQL on the file, bypassing the crate.
async fn raw(path: &Path, sql: &str) {
    let db = libsql::Builder::new_local(path).build().await.unwrap();
    let conn = db.connect().unwrap();
    conn.execute_batch(sql).await.unwrap();
}

#[tokio::test]
async fn stats_prints_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_db(&dir).await;
    let o = run(&["stats", "--db", s(&path)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for (table, n) in [
        ("session_traces", "2"),
        ("session_timesteps", "3"),
        ("events", "11"),
        ("messages", "8"),
        ("outcome_rewards", "1"),
        ("event_rewards", "2"),
    ] {
        assert_eq!(row(&out, table), Some(vec![table, n]), "{out}");
    }
    // Counted from the rows: the stored num_* columns were never updated.
    let a = row(&out, "a").unwrap();
    assert_eq!(a[2..], ["2", "7", "5"], "{out}");
    let b = row(&out, "b").unwrap();
    assert_eq!(b[2..], ["1", "4", "3"], "{out}");
    // Newest first, and the cap says what it left out.
    let o = run(&["stats", "--db", s(&path), "--limit", "1"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        row(&out, "b").is_some() && row(&out, "a").is_none(),
        "{out}"
    );
    assert!(out.contains("and 1 more"), "{out}");
}

#[tokio::test]
async fn check_passes_a_clean_database_and_names_dangling_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_db(&dir).await;
    let o = run(&["check", "--db", s(&path)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("integrity_check: ok"), "{out}");
    assert!(out.contains("result: ok"), "{out}");
    assert_eq!(
        field(&out, "events whose timestep_id names no step"),
        Some(0)
    );

    raw(
        &path,
        "INSERT INTO events (id, session_id, timestep_id, event_type) VALUES (900, 'a', 999, 'runtime');
         INSERT INTO events (id, session_id, timestep_id, event_type) VALUES (901, 'b', 1, 'runtime');
         INSERT INTO messages (id, session_id, message_type) VALUES (902, 'ghost', 'user');
         INSERT INTO event_rewards (id, event_id, session_id, reward_value) VALUES (903, 12345, 'a', 1.0);",
    )
    .await;
    let o = run(&["check", "--db", s(&path)]);
    assert_code(&o, 1);
    let out = stdout(&o);
    let expect = [
        ("events whose timestep_id names no step", 1),
        ("events whose step belongs to another session", 1),
        ("messages whose session_id names no session", 1),
        ("event_rewards whose event_id names no event", 1),
        ("messages whose timestep_id names no step", 0),
        ("event_rewards whose message_id names no message", 0),
    ];
    for (what, n) in expect {
        assert_eq!(field(&out, what), Some(n), "{what}:\n{out}");
    }
    for example in [
        "id 900: timestep_id 999",
        "id 901: timestep_id 1 is a step of session 'a'",
        "id 902: session_id 'ghost'",
        "id 903: event_id 12345",
    ] {
        assert!(out.contains(example), "{example}:\n{out}");
    }
    assert!(out.contains("result: 4 problem(s) found"), "{out}");
}

#[tokio::test]
async fn check_reports_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample_db(&dir).await;
    // Enough rows to fill the index's root page, all of it in the main file.
    raw(
        &path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
         INSERT INTO events (session_id, timestep_id, event_type) SELECT 'a', 1, 'runtime' FROM n;
         PRAGMA wal_checkpoint(TRUNCATE);
         PRAGMA journal_mode = DELETE;",
    )
    .await;
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    let conn = db.connect().unwrap();
    let mut rows = conn
        .query(
            "SELECT rootpage, (SELECT page_size FROM pragma_page_size()) FROM sqlite_master
             WHERE name = 'idx_events_timestep'",
            (),
        )
        .await
        .unwrap();
    let row = rows.next().await.unwrap().unwrap();
    let (page, size): (i64, i64) = (row.get(0).unwrap(), row.get(1).unwrap());
    drop(rows);
    drop(conn);
    drop(db);
    // Scribble over the middle of the index's root page.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = ((page - 1) * size + 200) as usize;
    bytes[at..at + 300].fill(7);
    std::fs::write(&path, bytes).unwrap();

    let o = run(&["check", "--db", s(&path)]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(!out.contains("integrity_check: ok"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("integrity_check:"))
        .unwrap();
    assert!(line.contains("problem(s)"), "{out}");
}

#[test]
fn check_on_a_missing_file_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.db");
    for cmd in ["check", "stats"] {
        let o = run(&[cmd, "--db", s(&path)]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
        assert!(stdout(&o).is_empty());
    }
    let o = run(&["check", "--db", &format!("file:{}", s(&path))]);
    assert_code(&o, 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn check_never_creates_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    raw(&path, "CREATE TABLE other (x INTEGER);").await;
    let o = run(&["check", "--db", s(&path)]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("not a trace database"),
        "{}",
        stderr(&o)
    );
    let o = run(&["check", "--db", ":memory:"]);
    assert_code(&o, 2);
    let db = libsql::Builder::new_local(&path).build().await.unwrap();
    let mut rows = db
        .connect()
        .unwrap()
        .query(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            (),
        )
        .await
        .unwrap();
    let n: i64 = rows.next().await.unwrap().unwrap().get(0).unwrap();
    assert_eq!(n, 1);
    // Nor does it switch the file to WAL.
    let mut rows = db
        .connect()
        .unwrap()
        .query("PRAGMA journal_mode", ())
        .await
        .unwrap();
    let mode: String = rows.next().await.unwrap().unwrap().get(0).unwrap();
    assert_eq!(mode, "delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_applies_a_real_spill_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.db");
    let spill = dir.path().join("replay.spill.jsonl");
    let config = StorageConfig::file(s(&path)).with_busy_timeout(Duration::from_millis(50));
    let w = BufferedTraceWriter::new(
        config.clone(),
        WriterConfig::default()
            .close_timeout(Duration::from_millis(400))
            .spill_path(&spill),
    )
    .await
    .unwrap();
    // The session and its step are committed; what follows cannot be.
    w.ensure_session("r", Utc::now(), &json!({})).await.unwrap();
    let ts = w
        .ensure_timestep("r", &SessionTimeStep::new("step-0", 0))
        .await
        .unwrap();
    w.flush().await.unwrap();
    let lock = Lock::take(&path).await;
    for i in 0..5 {
        w.insert_event("r", Some(ts), &common::env_event(i))
            .await
            .unwrap();
    }
    for i in 0..3 {
        w.insert_message("r", Some(ts), &common::message(i))
            .await
            .unwrap();
    }
    w.update_timestep("r", "step-0", Some(Utc::now()))
        .await
        .unwrap();
    let spilled = match w.close().await {
        Err(TracingError::Spilled { path: p, count }) => {
            assert_eq!(p, spill);
            count
        }
        other => panic!("expected Spilled, got {other:?}"),
    };
    assert_eq!(spilled, 9);
    lock.release().await;
    let plain = LibsqlTraceStorage::new(config).await.unwrap();
    assert_eq!(common::count(&plain, "events").await, 0);

    let o = run(&["replay", s(&spill), "--db", s(&path)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert_eq!(field(&out, "operations"), Some(9), "{out}");
    assert_eq!(field(&out, "inserted"), Some(8), "{out}");
    assert_eq!(common::count(&plain, "events").await, 5);
    assert_eq!(common::count(&plain, "messages").await, 3);
    let trace = plain.get_session("r").await.unwrap().unwrap();
    assert_eq!(trace.session_time_steps[0].events.len(), 5);
    assert!(trace.session_time_steps[0].completed_at.is_some());

    // A second run finds every row already there.
    let o = run(&["replay", s(&spill), "--db", s(&path)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert_eq!(field(&out, "operations"), Some(9), "{out}");
    assert_eq!(field(&out, "inserted"), Some(0), "{out}");
    assert_eq!(field(&out, "duplicates"), Some(8), "{out}");
    assert_eq!(field(&out, "updates"), Some(1), "{out}");
    assert_eq!(common::count(&plain, "events").await, 5);
    assert_eq!(common::count(&plain, "messages").await, 3);

    // A torn last line is reported with its number; the rest still applies.
    let mut text = std::fs::read_to_string(&spill).unwrap();
    text.push_str("{\"op\": \"ins\n");
    std::fs::write(&spill, text).unwrap();
    let o = run(&["replay", s(&spill), "--db", s(&path)]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert_eq!(field(&out, "refused"), Some(1), "{out}");
    assert!(out.contains("line 10: unreadable"), "{out}");
}

#[test]
fn replay_errors_exit_2_and_refused_lines_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let spill = dir.path().join("s.jsonl");
    // A database that does not exist is not made without --create.
    std::fs::write(&spill, "").unwrap();
    let o = run(&["replay", s(&spill), "--db", s(&db)]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--create"), "{}", stderr(&o));
    assert!(!db.exists());
    let o = run(&["replay", s(&spill), "--db", s(&db), "--create"]);
    assert_code(&o, 0);
    assert!(db.exists());
    // A missing spill file is an error; a line that is not an operation is
    // refused (exit 1) with its number.
    let o = run(&["replay", s(&dir.path().join("no.jsonl")), "--db", s(&db)]);
    assert_code(&o, 2);
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    std::fs::write(&spill, "not json\n").unwrap();
    let o = run(&["replay", s(&spill), "--db", s(&db)]);
    assert_code(&o, 1);
    assert!(stdout(&o).contains("line 1: unreadable"), "{}", stdout(&o));
}

#[test]
fn bad_arguments_get_usage_and_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["check"],
        &["stats"],
        &["replay", "x.jsonl"],
        &["replay", "--db", "x.db"],
        &["check", "--db", "x.db", "--bogus"],
    ] {
        let o = run(args);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("Usage:"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
    // A bad value gets clap's pointer to --help instead of the usage line.
    let o = run(&["stats", "--db", "x.db", "--limit", "many"]);
    assert_code(&o, 2);
    assert!(
        stderr(&o).contains("invalid value 'many'"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--help"]);
    assert_code(&o, 0);
    for cmd in ["replay", "check", "stats"] {
        assert!(stdout(&o).contains(cmd), "{}", stdout(&o));
    }
}

#[test]
fn the_token_is_never_printed() {
    // An unknown scheme fails before any network use; the token must not leak.
    let o = run(&[
        "stats",
        "--db",
        "postgres://db.example/x?authToken=s3cret",
        "--auth-token",
        "s3cret",
    ]);
    assert_code(&o, 2);
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("s3cret"));
}
