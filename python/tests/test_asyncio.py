"""The awaitable forms never block the event loop, and the blocking forms
release the GIL."""

import asyncio
import threading

import pytest

import trace_writer as tw
from conftest import runtime_event


def test_a_ticker_keeps_running_during_aflush(tmp_path, locked):
    path = tmp_path / "t.db"
    writer = tw.BufferedTraceWriter.file(path, busy_timeout=120)
    writer.ensure_session("s")
    writer.flush()
    lock = locked(path)  # the flush cannot finish until the ticker releases it
    for i in range(50):
        writer.insert_event("s", None, runtime_event(i))
    ticks_while_pending = 0

    async def main():
        nonlocal ticks_while_pending
        flushing = asyncio.ensure_future(writer.aflush())
        while not flushing.done():
            ticks_while_pending += 1
            if ticks_while_pending == 20:
                lock.release()
            await asyncio.sleep(0.005)
        await flushing

    asyncio.run(main())
    assert ticks_while_pending >= 20
    assert writer.query("SELECT COUNT(*) AS n FROM events") == [{"n": 50}]
    writer.close()


def test_aget_session_and_aquery_do_not_block_the_loop(tmp_path, locked):
    path = tmp_path / "t.db"
    writer = tw.BufferedTraceWriter.file(path, busy_timeout=120)
    writer.ensure_session("s")
    writer.flush()
    lock = locked(path)
    writer.insert_event("s", None, runtime_event(0))  # the read waits behind it
    ticks = 0

    async def main():
        nonlocal ticks
        read = asyncio.ensure_future(writer.aget_session("s"))
        rows = asyncio.ensure_future(writer.aquery("SELECT COUNT(*) AS n FROM events WHERE session_id = ?", ["s"]))
        while not (read.done() and rows.done()):
            ticks += 1
            if ticks == 10:
                lock.release()
            await asyncio.sleep(0.005)
        return await read, await rows

    trace, rows = asyncio.run(main())
    assert ticks >= 10
    assert len(trace["event_history"]) == 1 and rows == [{"n": 1}]
    writer.close()


def test_flush_releases_the_gil(tmp_path, locked):
    path = tmp_path / "t.db"
    writer = tw.BufferedTraceWriter.file(path, busy_timeout=120)
    lock = locked(path)
    writer.ensure_session("s")
    counted = threading.Event()

    def other_thread():
        # Runs Python code (needs the GIL) while the main thread is in flush().
        n = 0
        while n < 1000:
            n += 1
        counted.set()
        lock.release()

    t = threading.Thread(target=other_thread)
    t.start()
    writer.flush(timeout=600)  # holding the GIL here would hang the thread
    t.join()
    assert counted.is_set()
    writer.close()


def test_cancelled_await_is_harmless(cls):
    async def main():
        s = cls.memory()
        s.ensure_session("s")
        fut = s.aget_session("s")
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        assert (await s.aget_session("s"))["session_id"] == "s"
        await s.aclose()

    asyncio.run(main())


def test_awaitables_need_a_running_loop(cls):
    s = cls.memory()
    with pytest.raises(RuntimeError):
        s.aflush()
    s.close()


def test_aflush_on_the_plain_backend_is_a_no_op():
    async def main():
        s = tw.LibsqlTraceStorage.memory()
        assert await s.aflush() is None
        await s.aclose()

    asyncio.run(main())


def test_aflush_reports_a_timeout(tmp_path, locked):
    path = tmp_path / "t.db"
    writer = tw.BufferedTraceWriter.file(path, busy_timeout=120)
    lock = locked(path)
    writer.ensure_session("s")

    async def main():
        with pytest.raises(tw.TimeoutError):
            await writer.aflush(timeout=0.05)

    asyncio.run(main())
    lock.release()
    writer.flush()
    writer.close()


def test_tracer_awaitables(cls):
    async def main():
        async with tw.SessionTracer(cls.memory()) as tracer:
            tracer.start_session("s")
            tracer.record_event(runtime_event(0))
            tracer.end_session()
            await tracer.aflush()
            assert (await tracer.aget_session("s"))["event_history"][0]["actions"] == [0]
            assert await tracer.aquery("SELECT COUNT(*) AS n FROM events WHERE session_id = ?", ["s"]) == [{"n": 1}]

    asyncio.run(main())


def test_a_resolved_tracer_call_returns_its_value_without_yielding():
    """Over the writer, a timestep call that needs no wait is resolved on
    the loop's thread: awaiting it gives its value at once (another task
    does not run in between), as often as it is awaited, and it works
    where asyncio takes any awaitable."""

    async def main():
        writer = tw.BufferedTraceWriter.memory()
        tracer = tw.SessionTracer(writer)
        tracer.start_session("s")
        await tracer.astart_timestep("first", 0)  # loads the session's steps
        ran = []

        async def other():
            ran.append(1)

        other_task = asyncio.ensure_future(other())
        resolved = tracer.astart_timestep("second", 1)
        assert await resolved is None
        assert await resolved is None
        assert ran == []  # no switch to the loop happened
        assert await asyncio.gather(tracer.aend_timestep()) == [None]
        trace = await tracer.aend_session(True)
        assert [s["step_id"] for s in trace["session_time_steps"]] == ["first", "second"]
        await other_task
        await writer.aclose()

    asyncio.run(main())
