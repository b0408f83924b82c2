//! Id allocation: blocks of ids leased from the database, handed out by
//! producers without waiting for the actor.
//!
//! The actor leases a block by raising the table's row in `sqlite_sequence`
//! inside its own committed transaction, so AUTOINCREMENT (a plain backend)
//! and other writers never hand out those ids. Producers take ids from the
//! current block under a short mutex; when it is half used, the next block is
//! requested, so in steady state nobody waits.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tokio::sync::Notify;

use crate::db::Table;
use crate::error::TracingError;
use crate::writer::lock;
use crate::writer::protocol::{Control, LeaseRequest};
use crate::writer::stats::Counters;

/// Largest block a table grows to.
const MAX_BLOCK: i64 = crate::writer::config::MAX_ID_BLOCK;

/// Blocks used up faster than this double, so that a busy table leases about
/// once a second at most: each lease is a small transaction of its own.
const FAST_USE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct IdState {
    cur: Range<i64>,
    spare: Option<Range<i64>>,
    /// A lease request is in flight.
    pending: bool,
    block: i64,
    /// The last lease failure, given to waiters until a lease succeeds.
    error: Option<TracingError>,
    /// A producer found no id since the last grant.
    starved: bool,
    /// When the current block was granted: a block used up within
    /// [`FAST_USE`] means the next one should be bigger.
    granted_at: Instant,
}

#[derive(Debug)]
struct TableIds {
    state: Mutex<IdState>,
    /// Wakes producers waiting for a block.
    granted: Notify,
}

/// Per-table id blocks.
#[derive(Debug)]
pub(crate) struct IdAllocator {
    tables: Vec<TableIds>,
    lease_tx: Sender<Control>,
    counters: Arc<Counters>,
}

impl IdAllocator {
    pub(crate) fn new(block: i64, lease_tx: Sender<Control>, counters: Arc<Counters>) -> Self {
        let tables = Table::WITH_IDS
            .iter()
            .map(|_| TableIds {
                state: Mutex::new(IdState {
                    cur: 0..0,
                    spare: None,
                    pending: false,
                    block,
                    error: None,
                    starved: false,
                    granted_at: Instant::now(),
                }),
                granted: Notify::new(),
            })
            .collect();
        Self {
            tables,
            lease_tx,
            counters,
        }
    }

    fn table(&self, table: Table) -> &TableIds {
        &self.tables[table.id_slot().expect(crate::error::BUG)]
    }

    /// Takes the next id of `table`, or `None` if a block must come first
    /// (one has then been requested).
    ///
    /// # Errors
    /// The last lease failure, or `WriterClosed` if the actor is gone.
    pub(crate) fn try_alloc(&self, table: Table) -> Result<Option<i64>, TracingError> {
        let t = self.table(table);
        let mut s = lock(&t.state);
        if s.cur.is_empty() {
            if let Some(next) = s.spare.take() {
                s.cur = next;
                s.granted_at = Instant::now();
            }
        }
        if let Some(id) = s.cur.next() {
            if s.spare.is_none() && !s.pending && s.cur.end - s.cur.start < s.block / 2 {
                if s.granted_at.elapsed() < FAST_USE {
                    s.block = s.block.saturating_mul(2).min(MAX_BLOCK);
                }
                self.request(table, &mut s)?;
            }
            return Ok(Some(id));
        }
        if let Some(err) = s.error.clone() {
            if !s.pending {
                // Let the next caller try again.
                s.error = None;
            }
            return Err(err);
        }
        if !s.starved {
            // Someone has to wait: lease bigger blocks from now on.
            s.starved = true;
            s.block = s.block.saturating_mul(2).min(MAX_BLOCK);
            Counters::add(&self.counters.lease_waits, 1);
        }
        if !s.pending {
            self.request(table, &mut s)?;
        }
        Ok(None)
    }

    fn request(&self, table: Table, s: &mut IdState) -> Result<(), TracingError> {
        s.pending = true;
        self.lease_tx
            .send(Control::Lease(LeaseRequest {
                table,
                size: s.block,
            }))
            .map_err(|_| TracingError::WriterClosed)
    }

    /// Takes the next id, waiting for a block if needed.
    ///
    /// # Cancel safety
    /// Cancel safe: no id is taken until the future completes.
    pub(crate) async fn alloc(&self, table: Table) -> Result<i64, TracingError> {
        let t = self.table(table);
        loop {
            let notified = t.granted.notified();
            tokio::pin!(notified);
            // Registered before the check, so a grant in between is not missed.
            notified.as_mut().enable();
            if let Some(id) = self.try_alloc(table)? {
                return Ok(id);
            }
            notified.await;
        }
    }

    /// The initial size of the next block of `table`.
    pub(crate) fn block_size(&self, table: Table) -> i64 {
        lock(&self.table(table).state).block
    }

    /// Called by the actor with a freshly leased block.
    pub(crate) fn grant(&self, table: Table, ids: Range<i64>) {
        let t = self.table(table);
        {
            let mut s = lock(&t.state);
            s.pending = false;
            s.error = None;
            s.starved = false;
            if s.cur.is_empty() {
                s.granted_at = Instant::now();
                s.cur = ids;
            } else {
                s.spare = Some(ids);
            }
        }
        t.granted.notify_waiters();
    }

    /// Called by the actor when a lease failed.
    pub(crate) fn lease_failed(&self, table: Table, err: TracingError) {
        let t = self.table(table);
        {
            let mut s = lock(&t.state);
            s.pending = false;
            s.error = Some(err);
        }
        t.granted.notify_waiters();
    }

    /// Called when the actor stops: waiters fail with `err`.
    pub(crate) fn shut_down(&self, err: TracingError) {
        for t in &self.tables {
            {
                let mut s = lock(&t.state);
                s.cur = 0..0;
                s.spare = None;
                // `pending` stays set, so nobody asks a dead actor again.
                s.pending = true;
                s.error = Some(err.clone());
            }
            t.granted.notify_waiters();
        }
    }
}
