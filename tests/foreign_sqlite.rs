//! A second SQLite library in the process (the system `libsqlite3`, loaded
//! with `dlopen`) with the database open is found and reported, once per
//! file, by the writer and by the plain backend; this crate's own
//! connections on the same file are not taken for one.
#![cfg(target_os = "linux")]

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use trace_writer::*;

const SYSTEM_SQLITE: &str = "libsqlite3.so.0";

type OpenFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> c_int;
type ExecFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *mut c_void,
    *mut c_void,
    *mut *mut c_char,
) -> c_int;
type CloseFn = unsafe extern "C" fn(*mut c_void) -> c_int;

/// A connection of the system SQLite library: a second library in this
/// process, with its own locks.
struct SystemSqlite {
    lib: libloading::Library,
    db: *mut c_void,
}

impl SystemSqlite {
    fn open(path: &Path) -> SystemSqlite {
        // SAFETY: loading the system SQLite runs its (trivial) initialisers.
        let lib = unsafe { libloading::Library::new(SYSTEM_SQLITE) }.unwrap_or_else(|e| {
            panic!("{SYSTEM_SQLITE} is needed for this test (Debian: apt-get install libsqlite3-0): {e}")
        });
        let c_path = CString::new(path.to_str().expect("utf-8")).expect("no NUL");
        let mut db = std::ptr::null_mut();
        // SAFETY: the signature is SQLite's `sqlite3_open`.
        let rc = unsafe {
            let open: libloading::Symbol<OpenFn> =
                lib.get(b"sqlite3_open\0").expect("sqlite3_open");
            open(c_path.as_ptr(), &mut db)
        };
        assert_eq!(rc, 0, "sqlite3_open");
        let conn = SystemSqlite { lib, db };
        // A read opens the `-wal` too.
        conn.exec("SELECT count(*) FROM session_traces");
        conn
    }

    fn exec(&self, sql: &str) {
        let sql = CString::new(sql).expect("no NUL");
        // SAFETY: the signature is SQLite's `sqlite3_exec`; no callback.
        let rc = unsafe {
            let exec: libloading::Symbol<ExecFn> =
                self.lib.get(b"sqlite3_exec\0").expect("sqlite3_exec");
            exec(
                self.db,
                sql.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(rc, 0, "sqlite3_exec");
    }
}

impl Drop for SystemSqlite {
    fn drop(&mut self) {
        // SAFETY: the signature is SQLite's `sqlite3_close`; `db` is open.
        unsafe {
            let close: libloading::Symbol<CloseFn> =
                self.lib.get(b"sqlite3_close\0").expect("sqlite3_close");
            close(self.db);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sqlite_library_is_reported_once_per_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two-libraries.db");
    let config = StorageConfig::file(path.to_str().expect("utf-8"));
    let writer = BufferedTraceWriter::new(config.clone(), WriterConfig::default())
        .await
        .expect("open");
    writer
        .ensure_session("s", chrono::Utc::now(), &json!({}))
        .await
        .expect("session");
    writer.flush().await.expect("flush");
    // This crate's own second connection is one library: not reported.
    let plain = LibsqlTraceStorage::new(config.clone())
        .await
        .expect("plain");
    plain
        .ensure_session("p", chrono::Utc::now(), &json!({}))
        .await
        .expect("plain write");
    assert!(plain.take_foreign_sqlite_warnings().is_empty());
    assert!(writer.take_foreign_sqlite_warnings().is_empty());
    assert_eq!(writer.stats().foreign_sqlite, 0);

    let foreign = SystemSqlite::open(&path);
    // The writer looks at most once a second while it writes.
    let mut warnings = Vec::new();
    for i in 0..100 {
        writer
            .insert_event("s", None, &common_event(i))
            .await
            .expect("event");
        writer.flush().await.expect("flush");
        warnings.extend(writer.take_foreign_sqlite_warnings());
        if warnings.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(warnings.len(), 2, "the database and its -wal: {warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains(&format!("{name} open"))),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&format!("{name}-wal open"))),
        "{warnings:?}"
    );
    assert!(warnings.iter().all(|w| w.contains("lose")), "{warnings:?}");
    assert_eq!(writer.stats().foreign_sqlite, 2);
    // Once per file: writing on reports nothing new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    writer
        .insert_event("s", None, &common_event(1000))
        .await
        .expect("event");
    writer.flush().await.expect("flush");
    assert!(writer.take_foreign_sqlite_warnings().is_empty());
    assert_eq!(writer.stats().foreign_sqlite, 2);

    // The plain backend: at open, and while it writes.
    let second = LibsqlTraceStorage::new(config.clone())
        .await
        .expect("plain");
    assert_eq!(second.take_foreign_sqlite_warnings().len(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    plain
        .ensure_session("p2", chrono::Utc::now(), &json!({}))
        .await
        .expect("plain write");
    assert_eq!(plain.take_foreign_sqlite_warnings().len(), 2);

    writer.close().await.expect("close");
    plain.close().await.expect("close");
    second.close().await.expect("close");
    drop(foreign);
}

fn common_event(i: usize) -> TracingEvent {
    TracingEvent::Runtime(RuntimeEvent {
        base: BaseEventFields::new(format!("system-{i}")),
        actions: vec![i as i32],
    })
}
