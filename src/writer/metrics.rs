//! The writer's figures through the [`metrics`](https://docs.rs/metrics)
//! facade, for Prometheus, StatsD or OpenTelemetry dashboards.
//!
//! Handles are registered once, when a writer opens, with the label
//! `writer = WriterConfig::name`, so install the program's recorder (an
//! exporter) before opening the writer. With no recorder installed the
//! handles are no-ops. Most figures are published by the actor once per
//! batch, from the same counters as [`crate::WriterStats`], so producers pay
//! nothing for them; only a producer that waited for queue space records its
//! wait.
//!
//! | name | kind | what it counts |
//! |---|---|---|
//! | `trace_writer_enqueued_total` | counter | write operations accepted into the queue |
//! | `trace_writer_committed_total` | counter | write operations committed |
//! | `trace_writer_refused_total` | counter | write operations the database refused (see `WriterStats::failed`) |
//! | `trace_writer_spilled_total` | counter | write operations written to a spill file |
//! | `trace_writer_dead_letters_total` | counter | refused operations kept in the dead-letter file |
//! | `trace_writer_foreign_sqlite_total` | counter | files of the database found open by a second SQLite library in the process |
//! | `trace_writer_rejected_total` | counter | calls refused with `QueueFull` |
//! | `trace_writer_retries_total` | counter | batch attempts retried after a transient fault |
//! | `trace_writer_batches_total` | counter | transactions committed |
//! | `trace_writer_processed_bytes_total` | counter | bytes of write operations taken off the queue (committed, refused or spilled) |
//! | `trace_writer_queue_depth` | gauge | write operations queued now |
//! | `trace_writer_queue_bytes` | gauge | bytes of write operations queued now |
//! | `trace_writer_batches_in_flight` | gauge | batches being applied now: 0 or 1 locally, up to 2 requests on a remote server |
//! | `trace_writer_batch_ops` | histogram | operations per batch |
//! | `trace_writer_commit_duration_seconds` | histogram | time to apply and commit a batch, retries included |
//! | `trace_writer_remote_request_duration_seconds` | histogram | time from sending a remote batch's request to its reply |
//! | `trace_writer_enqueue_wait_seconds` | histogram | time a producer waited for queue space (only calls that waited) |
//! | `trace_writer_plain_statements_total` | counter | statements run by the plain backend ([`crate::LibsqlTraceStorage`]) |
//! | `trace_writer_plain_statement_duration_seconds` | histogram | the plain backend's time per call |
//!
//! Every figure has the label `writer`; the plain backend's carry
//! `writer` too, named after the database as a writer's default name is.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::storage::{DbKind, StorageConfig};
use crate::writer::WriterStats;

/// The label every figure carries.
pub const LABEL: &str = "writer";

/// The label value a database gets when no name was given: the file's
/// name, `:memory:`, or a remote server's host (never its path, query or
/// credentials, so no token can reach a dashboard).
pub(crate) fn default_name(storage: &StorageConfig) -> String {
    match storage.kind() {
        Ok(DbKind::Memory) => ":memory:".to_owned(),
        Ok(DbKind::File(path)) => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string_lossy().into_owned()),
        Ok(DbKind::Remote(url)) => crate::db::url::host(&url).to_owned(),
        Err(_) => String::new(),
    }
}

/// The writer's metric handles, registered once per writer.
#[derive(Debug)]
pub(crate) struct WriterMetrics {
    #[cfg(feature = "metrics")]
    handles: handles::Handles,
    /// Remote requests sent and not answered (or cut short) yet.
    requests: AtomicUsize,
}

/// A remote request in flight: counted from [`WriterMetrics::request`] to
/// its drop, and timed if it was answered.
#[derive(Debug)]
pub(crate) struct RequestTimer<'a> {
    metrics: &'a WriterMetrics,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    sent: Instant,
}

impl RequestTimer<'_> {
    /// The reply came: record the request's time.
    pub(crate) fn answered(self) {
        #[cfg(feature = "metrics")]
        self.metrics
            .handles
            .remote_request
            .record(self.sent.elapsed().as_secs_f64());
    }
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let n = self.metrics.requests.fetch_sub(1, Ordering::Relaxed) - 1;
        self.metrics.in_flight(n);
    }
}

/// What the actor last published, so it publishes only the increments.
#[derive(Debug, Default)]
pub(crate) struct Published {
    last: WriterStats,
}

impl WriterMetrics {
    /// Registers the handles of the writer called `name` with the recorder
    /// installed now.
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = name;
        Self {
            #[cfg(feature = "metrics")]
            handles: handles::Handles::new(name),
            requests: AtomicUsize::new(0),
        }
    }

    /// Counts a remote request in flight until the timer is dropped.
    pub(crate) fn request(&self) -> RequestTimer<'_> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight(n);
        RequestTimer {
            metrics: self,
            sent: Instant::now(),
        }
    }

    /// Publishes the counters' increments since the last call, and the
    /// gauges. Called by the actor after each batch and retry.
    pub(crate) fn publish(&self, now: &WriterStats, published: &mut Published) {
        #[cfg(feature = "metrics")]
        self.handles.publish(now, &published.last);
        published.last = *now;
    }

    /// Records one finished batch: its size in operations and bytes, and how
    /// long it took, retries included.
    pub(crate) fn batch(&self, ops: usize, bytes: usize, took: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.batch(ops, bytes, took);
        #[cfg(not(feature = "metrics"))]
        let _ = (ops, bytes, took);
    }

    /// Sets how many batches are being applied now.
    pub(crate) fn in_flight(&self, n: usize) {
        #[cfg(feature = "metrics")]
        self.handles.in_flight.set(n as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = n;
    }

    /// Records how long a producer waited for queue space.
    pub(crate) fn enqueue_wait(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        self.handles.enqueue_wait.record(took.as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }
}

/// The plain backend's figures: statements and their time.
#[derive(Debug)]
pub(crate) struct PlainMetrics {
    #[cfg(feature = "metrics")]
    statements: metrics::Counter,
    #[cfg(feature = "metrics")]
    duration: metrics::Histogram,
}

impl PlainMetrics {
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = name;
        #[cfg(feature = "metrics")]
        handles::describe();
        Self {
            #[cfg(feature = "metrics")]
            statements: metrics::counter!("trace_writer_plain_statements_total", LABEL => name.to_owned()),
            #[cfg(feature = "metrics")]
            duration: metrics::histogram!("trace_writer_plain_statement_duration_seconds", LABEL => name.to_owned()),
        }
    }

    /// Records one call of the plain backend.
    pub(crate) fn statement(&self, took: Duration) {
        #[cfg(feature = "metrics")]
        {
            self.statements.increment(1);
            self.duration.record(took.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = took;
    }
}

#[cfg(feature = "metrics")]
mod handles {
    use std::sync::Once;
    use std::time::Duration;

    use metrics::{Counter, Gauge, Histogram, Unit};

    use super::LABEL;
    use crate::writer::WriterStats;

    #[derive(Debug)]
    pub(super) struct Handles {
        enqueued: Counter,
        committed: Counter,
        refused: Counter,
        spilled: Counter,
        dead_letters: Counter,
        foreign_sqlite: Counter,
        rejected: Counter,
        retries: Counter,
        batches: Counter,
        bytes: Counter,
        queue_depth: Gauge,
        queue_bytes: Gauge,
        pub(super) in_flight: Gauge,
        batch_ops: Histogram,
        commit: Histogram,
        pub(super) remote_request: Histogram,
        pub(super) enqueue_wait: Histogram,
    }

    /// Describes every figure once per process, for exporters that print
    /// help text and units.
    pub(super) fn describe() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            use metrics::{describe_counter, describe_gauge, describe_histogram};
            describe_counter!(
                "trace_writer_enqueued_total",
                "write operations accepted into the queue"
            );
            describe_counter!("trace_writer_committed_total", "write operations committed");
            describe_counter!(
                "trace_writer_refused_total",
                "write operations the database refused"
            );
            describe_counter!(
                "trace_writer_spilled_total",
                "write operations written to a spill file"
            );
            describe_counter!(
                "trace_writer_dead_letters_total",
                "refused write operations kept in the dead-letter file"
            );
            describe_counter!(
                "trace_writer_foreign_sqlite_total",
                "files of the database found open by a second SQLite library in the process"
            );
            describe_counter!(
                "trace_writer_rejected_total",
                "calls refused with QueueFull"
            );
            describe_counter!(
                "trace_writer_retries_total",
                "batch attempts retried after a transient fault"
            );
            describe_counter!("trace_writer_batches_total", "transactions committed");
            describe_counter!(
                "trace_writer_processed_bytes_total",
                Unit::Bytes,
                "bytes of write operations taken off the queue"
            );
            describe_gauge!("trace_writer_queue_depth", "write operations queued now");
            describe_gauge!(
                "trace_writer_queue_bytes",
                Unit::Bytes,
                "bytes of write operations queued now"
            );
            describe_gauge!(
                "trace_writer_batches_in_flight",
                "batches being applied now"
            );
            describe_histogram!("trace_writer_batch_ops", "operations per batch");
            describe_histogram!(
                "trace_writer_commit_duration_seconds",
                Unit::Seconds,
                "time to apply and commit a batch, retries included"
            );
            describe_histogram!(
                "trace_writer_remote_request_duration_seconds",
                Unit::Seconds,
                "time from sending a remote batch to its reply"
            );
            describe_histogram!(
                "trace_writer_enqueue_wait_seconds",
                Unit::Seconds,
                "time a producer waited for queue space"
            );
            describe_counter!(
                "trace_writer_plain_statements_total",
                "statements run by the plain backend"
            );
            describe_histogram!(
                "trace_writer_plain_statement_duration_seconds",
                Unit::Seconds,
                "the plain backend's time per call"
            );
        });
    }

    impl Handles {
        pub(super) fn new(name: &str) -> Self {
            describe();
            let l = || [(LABEL, name.to_owned())];
            Self {
                enqueued: metrics::counter!("trace_writer_enqueued_total", &l()),
                committed: metrics::counter!("trace_writer_committed_total", &l()),
                refused: metrics::counter!("trace_writer_refused_total", &l()),
                spilled: metrics::counter!("trace_writer_spilled_total", &l()),
                dead_letters: metrics::counter!("trace_writer_dead_letters_total", &l()),
                foreign_sqlite: metrics::counter!("trace_writer_foreign_sqlite_total", &l()),
                rejected: metrics::counter!("trace_writer_rejected_total", &l()),
                retries: metrics::counter!("trace_writer_retries_total", &l()),
                batches: metrics::counter!("trace_writer_batches_total", &l()),
                bytes: metrics::counter!("trace_writer_processed_bytes_total", &l()),
                queue_depth: metrics::gauge!("trace_writer_queue_depth", &l()),
                queue_bytes: metrics::gauge!("trace_writer_queue_bytes", &l()),
                in_flight: metrics::gauge!("trace_writer_batches_in_flight", &l()),
                batch_ops: metrics::histogram!("trace_writer_batch_ops", &l()),
                commit: metrics::histogram!("trace_writer_commit_duration_seconds", &l()),
                remote_request: metrics::histogram!(
                    "trace_writer_remote_request_duration_seconds",
                    &l()
                ),
                enqueue_wait: metrics::histogram!("trace_writer_enqueue_wait_seconds", &l()),
            }
        }

        pub(super) fn publish(&self, now: &WriterStats, last: &WriterStats) {
            // The counters only grow, so the increment is the difference.
            let inc = |c: &Counter, now: u64, last: u64| {
                if now > last {
                    c.increment(now - last);
                }
            };
            inc(&self.enqueued, now.enqueued, last.enqueued);
            inc(&self.committed, now.committed, last.committed);
            inc(&self.refused, now.failed, last.failed);
            inc(&self.spilled, now.spilled, last.spilled);
            inc(&self.dead_letters, now.dead_letters, last.dead_letters);
            inc(
                &self.foreign_sqlite,
                now.foreign_sqlite,
                last.foreign_sqlite,
            );
            inc(&self.rejected, now.rejected, last.rejected);
            inc(&self.retries, now.retries, last.retries);
            inc(&self.batches, now.batches, last.batches);
            self.queue_depth.set(now.queue_depth as f64);
            self.queue_bytes.set(now.queue_bytes as f64);
        }

        pub(super) fn batch(&self, ops: usize, bytes: usize, took: Duration) {
            self.bytes.increment(bytes as u64);
            self.batch_ops.record(ops as f64);
            self.commit.record(took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_never_carry_a_path_query_or_credentials() {
        let name = |url: &str| default_name(&StorageConfig::file(url));
        assert_eq!(name("/var/runs/traces.db"), "traces.db");
        assert_eq!(name("file:/tmp/x/run.db"), "run.db");
        assert_eq!(name(":memory:"), ":memory:");
        assert_eq!(
            name("libsql://db.example.io/path?authToken=s3cret"),
            "db.example.io"
        );
        assert_eq!(
            name("https://user:s3cret@db.example.io:8080/v2"),
            "db.example.io:8080"
        );
        assert_eq!(name("wss://db.example.io#s3cret"), "db.example.io");
    }
}
