//! The conformance suite on the buffered writer, in memory, on a WAL file,
//! and with multi-row inserts forced on (the remote code path).
mod common;

use std::sync::Arc;

use common::Backend;
use trace_writer::{BufferedTraceWriter, StorageConfig, WriterConfig};

async fn writer(storage: StorageConfig, config: WriterConfig) -> Arc<BufferedTraceWriter> {
    Arc::new(BufferedTraceWriter::new(storage, config).await.unwrap())
}

mod memory {
    use super::*;

    async fn make() -> Backend {
        Backend {
            storage: writer(StorageConfig::memory(), WriterConfig::default()).await,
            dir: None,
        }
    }
    conformance_suite!(make());
}

mod file {
    use super::*;

    async fn make() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Backend {
            storage: writer(
                StorageConfig::file(path.to_str().unwrap()),
                WriterConfig::default(),
            )
            .await,
            dir: Some(dir),
        }
    }
    conformance_suite!(make());
}

mod multi_row {
    use super::*;

    async fn make() -> Backend {
        Backend {
            storage: writer(
                StorageConfig::memory(),
                WriterConfig::default().multi_row_inserts(true),
            )
            .await,
            dir: None,
        }
    }
    conformance_suite!(make());
}

/// A writer that did not write a session loads its steps from the file:
/// a step id with a NUL in it is found whole, not cut at the NUL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_writer_finds_a_stored_step_whose_id_holds_a_nul() {
    use trace_writer::{SessionTimeStep, TraceStorage};
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::file(dir.path().join("t.db").to_str().unwrap());
    let first = writer(config.clone(), WriterConfig::default()).await;
    first
        .ensure_session("s", chrono::Utc::now(), &serde_json::json!({}))
        .await
        .unwrap();
    let cut = first
        .ensure_timestep("s", &SessionTimeStep::new("a", 0))
        .await
        .unwrap();
    let whole = first
        .ensure_timestep("s", &SessionTimeStep::new("a\0b", 1))
        .await
        .unwrap();
    assert_ne!(cut, whole);
    first.close().await.unwrap();
    let second = writer(config, WriterConfig::default()).await;
    let again = second
        .ensure_timestep("s", &SessionTimeStep::new("a\0b", 1))
        .await
        .unwrap();
    assert_eq!(again, whole);
    second.flush().await.unwrap();
    let back = second.get_session("s").await.unwrap().unwrap();
    assert_eq!(back.session_time_steps.len(), 2);
    second.close().await.unwrap();
}
