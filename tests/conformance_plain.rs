//! The conformance suite on the plain backend, in memory and on a WAL file.
mod common;

use std::sync::Arc;

use common::Backend;
use trace_writer::{LibsqlTraceStorage, StorageConfig};

mod memory {
    use super::*;

    async fn make() -> Backend {
        Backend {
            storage: Arc::new(
                LibsqlTraceStorage::new(StorageConfig::memory())
                    .await
                    .unwrap(),
            ),
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
        let storage = LibsqlTraceStorage::new_file(path.to_str().unwrap())
            .await
            .unwrap();
        Backend {
            storage: Arc::new(storage),
            dir: Some(dir),
        }
    }
    conformance_suite!(make());
}
