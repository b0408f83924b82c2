"""Prometheus metrics for a ``BufferedTraceWriter``, through ``prometheus_client``.

``register_collector(writer)`` adds a collector to a registry (the default
one unless given). Each scrape reads ``writer.stats()`` and exposes the same
names as the Rust crate's ``metrics`` facade, labelled ``writer``::

    from prometheus_client import start_http_server
    from trace_writer import BufferedTraceWriter
    from trace_writer.metrics import register_collector

    writer = BufferedTraceWriter.file("traces.db")
    register_collector(writer)
    start_http_server(9000)          # http://localhost:9000/metrics

| name | type | from ``stats()`` |
|---|---|---|
| ``trace_writer_enqueued_total`` | counter | ``enqueued`` |
| ``trace_writer_committed_total`` | counter | ``committed`` |
| ``trace_writer_refused_total`` | counter | ``failed`` |
| ``trace_writer_spilled_total`` | counter | ``spilled`` |
| ``trace_writer_dead_letters_total`` | counter | ``dead_letters`` |
| ``trace_writer_foreign_sqlite_total`` | counter | ``foreign_sqlite`` |
| ``trace_writer_rejected_total`` | counter | ``rejected`` |
| ``trace_writer_retries_total`` | counter | ``retries`` |
| ``trace_writer_batches_total`` | counter | ``batches`` |
| ``trace_writer_queue_depth`` | gauge | ``queue_depth`` |
| ``trace_writer_queue_bytes`` | gauge | ``queue_bytes`` |
| ``trace_writer_commit_duration_seconds`` | summary | ``batches``, ``commit_micros_total`` |
| ``trace_writer_batch_ops`` | summary | ``batches``, ``committed`` |

``prometheus_client`` is an optional dependency: ``pip install
"trace-writer[metrics]"``.
"""

from typing import Any, Iterator, Optional

try:
    from prometheus_client.core import (
        REGISTRY,
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
        SummaryMetricFamily,
    )
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'trace_writer.metrics needs prometheus_client: pip install "trace-writer[metrics]"'
    ) from e

__all__ = ["WriterCollector", "register_collector"]

# (name without the ``_total`` suffix, the ``stats()`` key, help text)
_COUNTERS = (
    ("trace_writer_enqueued", "enqueued", "write operations accepted into the queue"),
    ("trace_writer_committed", "committed", "write operations committed"),
    ("trace_writer_refused", "failed", "write operations the database refused"),
    ("trace_writer_spilled", "spilled", "write operations written to a spill file"),
    ("trace_writer_dead_letters", "dead_letters", "refused write operations kept in the dead-letter file"),
    ("trace_writer_foreign_sqlite", "foreign_sqlite", "files of the database found open by a second SQLite library"),
    ("trace_writer_rejected", "rejected", "calls refused with QueueFull"),
    ("trace_writer_retries", "retries", "batch attempts retried after a transient fault"),
    ("trace_writer_batches", "batches", "transactions committed"),
)
_GAUGES = (
    ("trace_writer_queue_depth", "queue_depth", "write operations queued now"),
    ("trace_writer_queue_bytes", "queue_bytes", "bytes of write operations queued now"),
)


class WriterCollector:
    """A ``prometheus_client`` collector of one writer's ``stats()``.

    ``name`` is the ``writer`` label; by default the writer's own name
    (``writer.name``: the database file's name, ``:memory:`` or a server's
    host, never a token).
    """

    def __init__(self, writer: Any, name: Optional[str] = None) -> None:
        self._writer = writer
        self._name = name if name is not None else str(getattr(writer, "name", "trace-writer"))

    def describe(self) -> Iterator[Metric]:
        """Describes the families without reading the writer."""
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        """Reads ``stats()`` once and yields every family."""
        return self._families(self._writer.stats())

    def _families(self, stats: dict) -> Iterator[Metric]:
        label = [self._name]
        for name, key, doc in _COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["writer"])
            if stats:
                family.add_metric(label, stats[key])
            yield family
        for name, key, doc in _GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["writer"])
            if stats:
                family.add_metric(label, stats[key])
            yield family
        commit = SummaryMetricFamily(
            "trace_writer_commit_duration_seconds",
            "time to apply and commit a batch, retries included",
            labels=["writer"],
        )
        ops = SummaryMetricFamily(
            "trace_writer_batch_ops", "operations per committed batch", labels=["writer"]
        )
        if stats:
            commit.add_metric(label, stats["batches"], stats["commit_micros_total"] / 1e6)
            ops.add_metric(label, stats["batches"], stats["committed"])
        yield commit
        yield ops


def register_collector(writer: Any, registry: Any = None, name: Optional[str] = None) -> WriterCollector:
    """Registers a :class:`WriterCollector` of ``writer`` with ``registry``
    (the default registry unless given) and returns it; unregister it with
    ``registry.unregister(collector)`` when the writer is closed."""
    collector = WriterCollector(writer, name)
    (REGISTRY if registry is None else registry).register(collector)
    return collector
