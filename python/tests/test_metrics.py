"""trace_writer.metrics: a real prometheus_client registry, scraped as text,
against the rows a writer committed."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

import trace_writer as tw
from trace_writer.metrics import WriterCollector, register_collector


def _event(i: int, who: str = "env") -> dict:
    return {
        "event_type": "environment",
        "system_instance_id": who,
        "time_record": {"event_time": float(i)},
        "reward": 1.0,
    }


def test_the_collector_counts_what_the_database_holds(tmp_path):
    w = tw.BufferedTraceWriter.file(tmp_path / "scraped.db")
    registry = CollectorRegistry()
    collector = register_collector(w, registry=registry, name="py-scrape")
    w.query(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.system_instance_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    w.ensure_session("s")
    for i in range(300):
        w.insert_event("s", None, _event(i, "poison" if i % 10 == 0 else "env"))
    try:
        w.flush()
    except tw.WriteFailedError as e:
        assert e.count == 30
    else:
        raise AssertionError("the refused rows were not reported")

    rows = w.query("SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM session_traces) AS n")[0]["n"]
    assert rows == 271
    label = {"writer": "py-scrape"}
    get = registry.get_sample_value
    assert get("trace_writer_committed_total", label) == rows
    assert get("trace_writer_refused_total", label) == 30
    assert get("trace_writer_enqueued_total", label) == rows + 30
    assert get("trace_writer_queue_depth", label) == 0
    stats = w.stats()
    assert get("trace_writer_batches_total", label) == stats["batches"]
    assert get("trace_writer_commit_duration_seconds_count", label) == stats["batches"]
    assert get("trace_writer_batch_ops_sum", label) == stats["committed"]

    text = generate_latest(registry).decode()
    assert 'trace_writer_committed_total{writer="py-scrape"} 271.0' in text
    assert "# TYPE trace_writer_queue_depth gauge" in text
    registry.unregister(collector)
    w.close()


def test_the_label_defaults_to_the_writers_name_and_describe_reads_nothing(tmp_path):
    w = tw.BufferedTraceWriter.file(tmp_path / "named.db")
    collector = WriterCollector(w)
    expected = "named.db"
    assert w.name == expected
    named = tw.BufferedTraceWriter.memory(name="crafter-runs")
    assert named.name == "crafter-runs"
    named.close()
    families = list(collector.describe())
    assert {f.name for f in families} >= {"trace_writer_committed", "trace_writer_queue_depth"}
    assert all(not f.samples for f in families)
    samples = [s for f in collector.collect() for s in f.samples]
    assert samples and all(s.labels == {"writer": expected} for s in samples)
    w.close()


def test_register_collector_uses_the_default_registry(tmp_path):
    w = tw.BufferedTraceWriter.file(tmp_path / "default.db")
    collector = register_collector(w, name="default-registry")
    try:
        assert prometheus_client.REGISTRY.get_sample_value(
            "trace_writer_committed_total", {"writer": "default-registry"}
        ) == 0
    finally:
        prometheus_client.REGISTRY.unregister(collector)
        w.close()
