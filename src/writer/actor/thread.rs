//! The actor's thread, spawned with its own runtime.

use std::sync::Arc;

use crossbeam_channel::Receiver;
use tokio::sync::oneshot;

use crate::error::TracingError;
use crate::storage::{DbKind, StorageConfig};
use crate::writer::actor::{Actor, Shared};
use crate::writer::config::WriterConfig;
use crate::writer::protocol::{Control, Msg};

/// Answered once the database is open and the first id blocks are leased.
pub(crate) type StartReply = oneshot::Receiver<Result<(), TracingError>>;

/// Spawns the actor on its own named thread and waits until the database is
/// open, so a bad path or URL fails here and a handle never points at a dead
/// actor.
pub(crate) fn spawn(
    rx: Receiver<Msg>,
    control_rx: Receiver<Control>,
    shared: Arc<Shared>,
    config: WriterConfig,
    storage: StorageConfig,
) -> Result<(std::thread::JoinHandle<()>, StartReply), TracingError> {
    let (ready_tx, ready_rx) = oneshot::channel();
    let remote = matches!(storage.kind(), Ok(DbKind::Remote(_)));
    let handle = std::thread::Builder::new()
        .name("trace-writer".into())
        .spawn(move || {
            // The actor's own runtime: libsql's API is async (remote
            // connections need a reactor), but this thread blocks freely. On
            // a remote server one worker drives the requests in flight while
            // the actor collects the next batch (see `remote.rs`).
            let rt = if remote {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("trace-writer-io")
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            };
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(TracingError::Internal(format!(
                        "cannot build the actor's runtime: {e}"
                    ))));
                    return;
                }
            };
            rt.block_on(async move {
                match Actor::start(rx, control_rx, shared, config, storage).await {
                    Ok(actor) => {
                        let _ = ready_tx.send(Ok(()));
                        actor.run().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| TracingError::Internal(format!("cannot spawn the writer thread: {e}")))?;
    Ok((handle, ready_rx))
}
