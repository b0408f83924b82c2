"""with / async with, closing twice, calls after close, and exceptions
leaving a block."""

import asyncio

import pytest

import trace_writer as tw
from conftest import runtime_event

AFTER_CLOSE = (tw.WriterClosedError, tw.NotInitializedError)


def test_with_closes_and_the_writer_flushes_first(cls, tmp_path):
    path = tmp_path / "t.db"
    with cls.file(path) as s:
        s.ensure_session("s")
        for i in range(100):
            s.insert_event("s", None, runtime_event(i))
    with pytest.raises(AFTER_CLOSE):
        s.get_session("s")
    with cls.file(path) as again:
        assert len(again.get_session("s")["event_history"]) == 100


def test_async_with_closes(cls, tmp_path):
    path = tmp_path / "t.db"

    async def main():
        async with cls.file(path) as s:
            s.ensure_session("s")
            s.insert_event("s", None, runtime_event(0))
            assert (await s.aget_session("s"))["session_id"] == "s"
        return s

    s = asyncio.run(main())
    with pytest.raises(AFTER_CLOSE):
        s.query("SELECT 1")
    with cls.file(path) as again:
        assert len(again.get_session("s")["event_history"]) == 1


def test_close_twice_and_calls_after_close(cls):
    s = cls.memory()
    s.close()
    s.close()
    calls = [
        lambda: s.ensure_session("s"),
        lambda: s.ensure_timestep("s", {"step_id": "a", "step_index": 0, "timestamp": "2025-01-01T00:00:00Z"}),
        lambda: s.update_timestep("s", "a"),
        lambda: s.insert_event("s", None, runtime_event(0)),
        lambda: s.insert_message("s", None, {"content": {"text": "x"}, "message_type": "user"}),
        lambda: s.insert_outcome_reward("s", {"total_reward": 1.0}),
        lambda: s.insert_event_reward("s", 1, None, None, {"reward_value": 1.0}),
        lambda: s.update_session_counts("s"),
        lambda: s.get_session("s"),
        lambda: s.query("SELECT 1"),
        lambda: s.delete_session("s"),
    ]
    for call in calls:
        with pytest.raises(AFTER_CLOSE) as info:
            call()
        assert isinstance(info.value, tw.TraceWriterError)
    if cls is tw.BufferedTraceWriter:
        with pytest.raises(tw.WriterClosedError):
            s.flush()
    # Leaving a `with` on an already-closed storage is fine.
    with s:
        pass


def test_aclose_twice_and_async_calls_after_close(cls):
    async def main():
        s = cls.memory()
        await s.aclose()
        await s.aclose()
        with pytest.raises(AFTER_CLOSE):
            await s.aget_session("s")
        with pytest.raises(AFTER_CLOSE):
            await s.aquery("SELECT 1")

    asyncio.run(main())


def test_an_exception_in_the_block_is_not_hidden(cls):
    with pytest.raises(ZeroDivisionError):
        with cls.memory() as s:
            s.ensure_session("s")
            1 / 0
    with pytest.raises(AFTER_CLOSE):
        s.get_session("s")


def open_then_lock(path, locked, tmp_path):
    """A writer whose close must miss its deadline: the database is locked
    (by another process) after it opened."""
    w = tw.BufferedTraceWriter.file(
        path, close_timeout=0.1, flush_timeout=0.1, busy_timeout=0.01,
        spill_path=tmp_path / "spill.jsonl",
    )
    return w, locked(path)


def test_a_closing_error_is_chained_as_context(tmp_path, locked):
    w, lock = open_then_lock(tmp_path / "t.db", locked, tmp_path)
    with pytest.raises(KeyError) as info:
        with w:
            w.ensure_session("s")
            raise KeyError("in the block")
    closing = info.value.__context__
    # The flush timed out, then close spilled what was left.
    assert isinstance(closing, tw.SpilledError), repr(closing)
    assert closing.count == 1
    lock.release()


def test_a_closing_error_without_an_exception_is_raised(tmp_path, locked):
    w, lock = open_then_lock(tmp_path / "t.db", locked, tmp_path)
    with pytest.raises(tw.SpilledError):
        with w:
            w.ensure_session("s")
    with pytest.raises(tw.WriterClosedError):
        w.ensure_session("t")  # it was closed all the same
    lock.release()


def test_async_with_chains_a_closing_error(tmp_path, locked):
    w, lock = open_then_lock(tmp_path / "t.db", locked, tmp_path)

    async def main():
        async with w:
            w.ensure_session("s")
            raise KeyError("in the block")

    with pytest.raises(KeyError) as info:
        asyncio.run(main())
    assert isinstance(info.value.__context__, tw.SpilledError)
    with pytest.raises(tw.WriterClosedError):
        w.ensure_session("t")
    lock.release()


def test_tracer_with_closes_its_storage(cls, tmp_path):
    with tw.SessionTracer(cls.file(tmp_path / "t.db")) as tracer:
        tracer.start_session("s")
        tracer.record_event(runtime_event(0))
        tracer.end_session()
    with pytest.raises(AFTER_CLOSE):
        tracer.get_session("s")

    async def main():
        async with tw.SessionTracer(cls.file(tmp_path / "u.db")) as t:
            t.start_session("s")
            t.end_session()
            await t.aflush()
        return t

    t = asyncio.run(main())
    with pytest.raises(AFTER_CLOSE):
        t.get_session("s")


def test_a_writer_left_open_is_closed_at_exit(tmp_path):
    """A script that never closes its writer loses nothing at exit."""
    import subprocess
    import sys

    path = tmp_path / "t.db"
    script = (
        "import trace_writer as tw\n"
        f"w = tw.BufferedTraceWriter.file({str(path)!r}, linger=5.0)\n"
        "w.ensure_session('s')\n"
        "for i in range(2000):\n"
        "    w.insert_event('s', None, {'event_type': 'runtime', 'system_instance_id': 'x',\n"
        "                               'time_record': {'event_time': float(i)}, 'actions': [i]})\n"
        "tracer = tw.SessionTracer(w)\n"  # a tracer holds the writer too
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with tw.LibsqlTraceStorage.file(path) as s:
        assert s.query("SELECT COUNT(*) AS n FROM events") == [{"n": 2000}]
