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
