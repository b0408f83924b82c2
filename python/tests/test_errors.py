"""Every exception class: its place in the hierarchy, its attributes, and
a real call that raises it wherever one can on demand."""

import builtins
import os

import pytest

import trace_writer as tw
from conftest import env_event, runtime_event

TABLE = [
    ("Database", tw.DatabaseError, ()),
    ("NoActiveSession", tw.NoActiveSessionError, ()),
    ("NoActiveTimestep", tw.NoActiveTimestepError, ()),
    ("SessionAlreadyActive", tw.SessionAlreadyActiveError, ()),
    ("InvalidState", tw.InvalidStateError, ()),
    ("Serialization", tw.SerializationError, ()),
    ("NotInitialized", tw.NotInitializedError, ()),
    ("Internal", tw.InternalError, ()),
    ("WriterClosed", tw.WriterClosedError, ()),
    ("QueueFull", tw.QueueFullError, ()),
    ("InvalidInput", tw.InvalidInputError, (ValueError,)),
    ("WriteFailed", tw.WriteFailedError, ()),
    ("Timeout", tw.TimeoutError, (builtins.TimeoutError,)),
    ("Spilled", tw.SpilledError, ()),
    ("CloseFailed", tw.CloseFailedError, ()),
    ("Halted", tw.HaltedError, ()),
]


@pytest.mark.parametrize("variant, cls, extra", TABLE, ids=[t[0] for t in TABLE])
def test_each_variant_maps_to_its_class(variant, cls, extra):
    exc = tw._trace_writer._error_for_variant(variant)
    assert type(exc) is cls
    assert isinstance(exc, tw.TraceWriterError) and isinstance(exc, Exception)
    for base in extra:
        assert isinstance(exc, base)
    assert cls.__module__ == "trace_writer"
    assert str(exc)


def test_attributes():
    e = tw._trace_writer._error_for_variant("WriteFailed")
    assert (e.count, e.first_cause) == (3, "constraint failed")
    e = tw._trace_writer._error_for_variant("Spilled")
    assert (e.path, e.count) == ("/tmp/x.spill.jsonl", 7)
    e = tw._trace_writer._error_for_variant("CloseFailed")
    assert (e.count, e.cause) == (2, "deadline")
    e = tw._trace_writer._error_for_variant("Halted")
    assert (e.cause, e.path, e.count) == ("no such table: events", "/tmp/h.spill.jsonl", 5)


def test_database_error(storage):
    with pytest.raises(tw.DatabaseError, match="no such table"):
        storage.query("SELECT * FROM no_such_table")


def test_text_that_is_not_utf8_is_a_database_error_and_the_storage_lives_on(storage):
    storage.ensure_session("before")
    with pytest.raises(tw.DatabaseError, match="not UTF-8"):
        storage.query("SELECT CAST(x'ff' AS TEXT) AS t")
    storage.ensure_session("after")
    storage.flush()
    assert [r["session_id"] for r in storage.query("SELECT session_id FROM session_traces ORDER BY 1")] == [
        "after",
        "before",
    ]


def test_serialization_error_on_a_corrupt_row(storage):
    storage.ensure_session("s")
    storage.query("UPDATE session_traces SET created_at = 'not a time' WHERE session_id = 's'")
    with pytest.raises(tw.SerializationError, match="not a time"):
        storage.get_session("s")


def test_not_initialized_after_close_on_the_plain_backend():
    s = tw.LibsqlTraceStorage.memory()
    s.close()
    with pytest.raises(tw.NotInitializedError):
        s.ensure_session("s")


def test_writer_closed_after_close():
    w = tw.BufferedTraceWriter.memory()
    w.close()
    with pytest.raises(tw.WriterClosedError):
        w.ensure_session("s")


def test_queue_full_under_reject(tmp_path, locked):
    path = tmp_path / "t.db"
    w = tw.BufferedTraceWriter.file(path, overflow="reject", queue_capacity=2, linger=0)
    w.ensure_session("s")
    w.flush()  # the queue is empty
    lock = locked(path)  # commits wait, so the queue stays full
    w.insert_event("s", None, runtime_event(0))
    w.insert_event("s", None, runtime_event(1))
    with pytest.raises(tw.QueueFullError):
        w.insert_event("s", None, runtime_event(2))
    assert w.stats()["rejected"] == 1
    lock.release()
    w.flush()
    assert w.query("SELECT COUNT(*) AS n FROM events") == [{"n": 2}]
    w.close()


def test_write_failed_names_the_count_and_first_cause(tmp_path):
    path = tmp_path / "t.db"
    w = tw.BufferedTraceWriter.file(path)
    w.ensure_session("s")
    w.flush()
    # A trigger in the database refuses one row: the others commit.
    w.query(
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.system_instance_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
    )
    w.insert_event("s", None, runtime_event(0))
    bad = runtime_event(1)
    bad["system_instance_id"] = "poison"
    w.insert_event("s", None, bad)
    w.insert_event("s", None, runtime_event(2))
    with pytest.raises(tw.WriteFailedError) as info:
        w.flush()
    assert info.value.count == 1
    assert "poisoned row" in info.value.first_cause
    assert w.stats()["failed"] == 1
    assert any("poisoned row" in e for e in w.recent_errors())
    assert w.query("SELECT COUNT(*) AS n FROM events") == [{"n": 2}]
    w.flush()  # reported once
    w.close()


def test_timeout_on_flush_while_the_database_is_locked(tmp_path, locked):
    path = tmp_path / "t.db"
    w = tw.BufferedTraceWriter.file(path, busy_timeout=60)
    lock = locked(path)
    w.ensure_session("s")
    with pytest.raises(tw.TimeoutError) as info:
        w.flush(timeout=0.05)
    assert isinstance(info.value, builtins.TimeoutError)
    lock.release()
    w.flush()  # nothing was lost
    assert w.get_session("s") is not None
    w.close()


def test_spilled_when_close_runs_out_of_time(tmp_path, locked):
    path = tmp_path / "t.db"
    spill = tmp_path / "spill.jsonl"
    w = tw.BufferedTraceWriter.file(path, close_timeout=0.1, busy_timeout=0.01, spill_path=spill)
    lock = locked(path)
    w.ensure_session("s")
    w.insert_event("s", None, env_event(1))
    with pytest.raises(tw.SpilledError) as info:
        w.close()
    assert info.value.count == 2
    assert info.value.path == str(spill)
    assert os.path.exists(info.value.path)
    lock.release()


def test_tracer_state_classes():
    t = tw.SessionTracer.memory()
    with pytest.raises(tw.NoActiveSessionError):
        t.start_timestep("a")
    t.start_session("s")
    with pytest.raises(tw.NoActiveTimestepError):
        t.end_timestep()
    with pytest.raises(tw.SessionAlreadyActiveError):
        t.start_session()
    t.close()


def test_every_error_is_a_trace_writer_error():
    assert all(issubclass(c, tw.TraceWriterError) for _, c, _ in TABLE)
    assert len({c for _, c, _ in TABLE}) == 16


def test_halted_when_a_table_disappears_and_nothing_is_lost(tmp_path):
    """A fatal error (the events table renamed under the writer) halts it:
    flush raises HaltedError naming the spill file, later writes fail fast,
    and every acknowledged write is in that file."""
    w = tw.BufferedTraceWriter.file(tmp_path / "halt.db")
    w.ensure_session("s")
    w.flush()
    w.query("ALTER TABLE events RENAME TO events_elsewhere")
    ids = [w.insert_event("s", None, env_event(i)) for i in range(5)]
    with pytest.raises(tw.HaltedError) as caught:
        w.flush()
    e = caught.value
    assert "events" in e.cause and e.count == 5
    with open(e.path) as f:
        spilled = f.read().splitlines()
    assert len(spilled) == 5 and all(str(i) in "".join(spilled) for i in ids)
    with pytest.raises(tw.HaltedError):
        w.insert_event("s", None, env_event(9))
    with pytest.raises(tw.HaltedError):
        w.close()
