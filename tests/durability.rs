//! The durability contract: every acknowledged write ends committed, refused
//! and kept in the dead-letter file, or spilled; nothing is discarded, and
//! `flush()` says `Ok` only when everything before it committed.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use trace_writer::*;

fn file_config(path: &Path) -> StorageConfig {
    StorageConfig::file(path.to_str().expect("utf-8 path"))
}

async fn ids_in(path: &Path, table: &str) -> BTreeSet<i64> {
    let plain = LibsqlTraceStorage::new(file_config(path))
        .await
        .expect("plain");
    let rows = plain
        .query(&format!("SELECT id FROM {table}"), vec![])
        .await
        .expect("ids");
    let ids = rows
        .iter()
        .map(|r| r["id"].as_i64().expect("integer id"))
        .collect();
    plain.close().await.expect("close plain");
    ids
}

/// Another connection renames `events` while the writer runs: the batch
/// that meets "no such table" is fatal. It is spilled, not dropped; the
/// writer halts, `flush()` says so, and later write calls fail fast with
/// the cause. Once the table is back, replaying the spill file puts every
/// acknowledged event there under the id its call returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_spills_the_batch_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fatal.db");
    let writer =
        BufferedTraceWriter::new(file_config(&path), WriterConfig::default().max_batch_ops(8))
            .await
            .expect("open");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    let mut acknowledged = BTreeSet::new();
    for i in 0..20 {
        let id = writer
            .insert_event("s", None, &common::env_event(i))
            .await
            .expect("event");
        acknowledged.insert(id);
    }
    writer.flush().await.expect("the first events commit");

    let other = LibsqlTraceStorage::new(file_config(&path))
        .await
        .expect("another connection");
    other
        .query("ALTER TABLE events RENAME TO events_away", vec![])
        .await
        .expect("rename");

    for i in 20..60 {
        match writer.insert_event("s", None, &common::env_event(i)).await {
            Ok(id) => {
                acknowledged.insert(id);
            }
            Err(TracingError::Halted { .. }) => break,
            Err(other) => panic!("expected Ok or Halted, got {other:?}"),
        }
    }
    let spill = match writer.flush().await {
        Err(TracingError::Halted {
            cause,
            path,
            spilled,
        }) => {
            assert!(cause.contains("events"), "{cause}");
            assert!(spilled > 0);
            path
        }
        other => panic!("flush must fail while writes are spilled, got {other:?}"),
    };
    // Fail fast: no write is acknowledged while the cause persists.
    match writer.insert_event("s", None, &common::env_event(99)).await {
        Err(TracingError::Halted { path, .. }) => assert_eq!(path, spill),
        other => panic!("expected Halted, got {other:?}"),
    }
    assert!(matches!(
        writer.flush().await,
        Err(TracingError::Halted { .. })
    ));
    // The cause is named once, not once per batch.
    let recent = writer.recent_errors();
    let fatal: Vec<_> = recent.iter().filter(|e| e.contains("fatal")).collect();
    assert_eq!(fatal.len(), 1, "{recent:?}");

    other
        .query("ALTER TABLE events_away RENAME TO events", vec![])
        .await
        .expect("rename back");
    other.close().await.expect("close other");
    let stats = writer.stats();
    match writer.close().await {
        Err(TracingError::Halted { path, spilled, .. }) => {
            assert_eq!(path, spill);
            assert_eq!(spilled as u64, stats.spilled);
        }
        other => panic!("close must name the spill file, got {other:?}"),
    }
    assert_eq!(stats.failed, 0, "nothing counted as lost: {stats:?}");
    assert_eq!(stats.committed + stats.spilled, stats.enqueued, "{stats:?}");

    let report = replay_spill_file(file_config(&path), &spill)
        .await
        .expect("replay");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(ids_in(&path, "events").await, acknowledged);
}

/// `flush()` racing `close()` during an outage: the batches ahead of the
/// flush are spilled at the close deadline, so the flush must not say `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_behind_spilled_writes_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("race.db");
    let writer = BufferedTraceWriter::new(
        file_config(&path).with_busy_timeout(Duration::from_millis(20)),
        WriterConfig::default().close_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("open");
    let lock = common::Lock::take(&path).await;
    for i in 0..10 {
        writer
            .insert_event("s", None, &common::env_event(i))
            .await
            .expect("event");
    }
    let flushing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush().await }
    });
    // Let the flush be queued behind the writes before close starts.
    while writer.stats().retries == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let closed = writer.close().await;
    let flushed = flushing.await.expect("join");
    lock.release().await;
    match flushed {
        Err(TracingError::Spilled { count, .. }) => assert_eq!(count, 10),
        other => panic!("the flush's writes were spilled; it said {other:?}"),
    }
    assert!(matches!(
        closed,
        Err(TracingError::Spilled { count: 10, .. })
    ));
}

/// Rows refused by a trigger are kept in the dead-letter file, each with
/// its cause; the flush names the file, and once the trigger is dropped the
/// file replays them under their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_rows_are_kept_in_the_dead_letter_file_and_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("refused.db");
    let writer = BufferedTraceWriter::new(file_config(&path), WriterConfig::default())
        .await
        .expect("open");
    writer
        .query(
            "CREATE TRIGGER no_odd BEFORE INSERT ON events \
             WHEN NEW.id % 2 = 1 BEGIN SELECT RAISE(ABORT, 'odd ids refused'); END",
            vec![],
        )
        .await
        .expect("trigger");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    let mut ids = BTreeSet::new();
    for i in 0..10 {
        ids.insert(
            writer
                .insert_event("s", None, &common::env_event(i))
                .await
                .expect("event"),
        );
    }
    let dead_letter = match writer.flush().await {
        Err(TracingError::WriteFailed {
            failed,
            first_cause,
        }) => {
            assert_eq!(failed, 5);
            assert!(first_cause.contains("odd ids refused"), "{first_cause}");
            let at = first_cause.find(" are kept in ").expect("names the file") + 13;
            let rest = &first_cause[at..];
            PathBuf::from(&rest[..rest.find(" for replay").expect("path end")])
        }
        other => panic!("expected WriteFailed, got {other:?}"),
    };
    // Each distinct cause once, not once per row.
    let recent = writer.recent_errors();
    let odd: Vec<_> = recent
        .iter()
        .filter(|e| e.contains("odd ids refused"))
        .collect();
    assert_eq!(odd.len(), 1, "{recent:?}");
    assert_eq!(writer.stats().dead_letters, 5);
    writer.close().await.expect("close");

    let text = std::fs::read_to_string(&dead_letter).expect("dead-letter file");
    assert_eq!(text.lines().count(), 5);
    for line in text.lines() {
        let line: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(
            line["cause"]
                .as_str()
                .is_some_and(|c| c.contains("odd ids refused")),
            "{line}"
        );
    }
    let committed = ids_in(&path, "events").await;
    assert_eq!(committed.len(), 5);

    // While the trigger is there, a replay refuses the same rows again.
    let report = replay_spill_file(file_config(&path), &dead_letter)
        .await
        .expect("replay");
    assert_eq!(report.refused.len(), 5);
    let plain = LibsqlTraceStorage::new(file_config(&path))
        .await
        .expect("plain");
    plain
        .query("DROP TRIGGER no_odd", vec![])
        .await
        .expect("drop trigger");
    plain.close().await.expect("close plain");
    let report = replay_spill_file(file_config(&path), &dead_letter)
        .await
        .expect("replay");
    assert_eq!(report.inserted, 5, "{report:?}");
    assert_eq!(ids_in(&path, "events").await, ids);
}

/// Spill and dead-letter files are created new, mode `0600`, in a per-user
/// folder of mode `0700`, under names with random bits.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = tempfile::tempdir().expect("tempdir");
    // A world-readable umask must not matter: the modes are set at creation.
    let kept_dir = dir.path().join("kept");
    let writer = BufferedTraceWriter::new(
        StorageConfig::memory(),
        WriterConfig::default().spill_dir(&kept_dir),
    )
    .await
    .expect("open");
    writer
        .query(
            "CREATE TRIGGER refuse BEFORE INSERT ON events \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
            vec![],
        )
        .await
        .expect("trigger");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    writer
        .insert_event("s", None, &common::env_event(0))
        .await
        .expect("event");
    assert!(matches!(
        writer.flush().await,
        Err(TracingError::WriteFailed { failed: 1, .. })
    ));
    // A fatal error next, so that the spill file is made too.
    writer
        .query("DROP TABLE events", vec![])
        .await
        .expect("drop");
    writer
        .insert_event("s", None, &common::env_event(1))
        .await
        .expect("event");
    let spill = match writer.flush().await {
        Err(TracingError::Halted { path, .. }) => path,
        other => panic!("expected Halted, got {other:?}"),
    };
    let _ = writer.close().await;
    assert_eq!(mode(&kept_dir), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&kept_dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&spill), "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // `memory-<secs>-<pid>-<16 random hex digits>.<kind>.jsonl`
        let random = name.split(['-', '.']).nth(3).expect("random part");
        assert_eq!(random.len(), 16, "{name}");
        assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    // The default per-user folder is made `0700`, and one with a looser
    // mode is tightened, by a child process whose state folder is here.
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("trace-writer")).expect("mkdir");
    std::fs::set_permissions(
        state.join("trace-writer"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "spill_into_the_default_folder_child",
            "--nocapture",
        ])
        .env("XDG_STATE_HOME", &state)
        .env("TRACE_WRITER_CHILD", "1")
        .status()
        .expect("child");
    assert!(status.success());
    let folder = state.join("trace-writer");
    assert_eq!(mode(&folder), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);
}

/// The child of `kept_files_are_private`: a `:memory:` writer whose one
/// batch is fatal spills into the default per-user folder.
#[tokio::test]
async fn spill_into_the_default_folder_child() {
    if std::env::var_os("TRACE_WRITER_CHILD").is_none() {
        return;
    }
    let writer = BufferedTraceWriter::new(StorageConfig::memory(), WriterConfig::default())
        .await
        .expect("open");
    writer
        .query("DROP TABLE events", vec![])
        .await
        .expect("drop");
    writer
        .insert_event("s", None, &common::env_event(0))
        .await
        .expect("event");
    let spill = match writer.flush().await {
        Err(TracingError::Halted { path, .. }) => path,
        other => panic!("expected Halted, got {other:?}"),
    };
    let expected = std::path::PathBuf::from(std::env::var_os("XDG_STATE_HOME").expect("set"))
        .join("trace-writer");
    assert_eq!(spill.parent(), Some(expected.as_path()));
    let _ = writer.close().await;
}
