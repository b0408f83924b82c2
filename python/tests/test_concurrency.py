"""Sharing one storage: 8 threads, 64 asyncio tasks; exact counts and
unique ids."""

import asyncio
import threading

import trace_writer as tw
from conftest import env_event, llm_event, runtime_event

THREADS = 8
SESSIONS = 5
STEPS = 10


def test_eight_threads_through_one_writer(tmp_path):
    writer = tw.BufferedTraceWriter.file(tmp_path / "t.db")
    ids: list[list[int]] = [[] for _ in range(THREADS)]
    errors = []
    barrier = threading.Barrier(THREADS)

    def work(t):
        try:
            tracer = tw.SessionTracer(writer)
            barrier.wait()
            for s in range(SESSIONS):
                tracer.start_session(f"t{t}-s{s}")
                for i in range(STEPS):
                    tracer.start_timestep(f"step-{i}", turn_number=i)
                    ids[t].append(tracer.record_event(llm_event(t, i)))
                    ids[t].append(tracer.record_event(env_event(i)))
                    tracer.record_message({"content": {"text": "m"}, "message_type": "user"})
                tracer.end_session()
        except Exception as e:  # reported below, with the thread
            errors.append((t, e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    writer.flush()
    flat = [i for per in ids for i in per]
    total = THREADS * SESSIONS * STEPS * 2
    assert len(flat) == total and len(set(flat)) == total
    assert sorted(flat) == list(range(1, total + 1))
    for per in ids:
        assert per == sorted(per)  # each thread's ids grow in call order
    count = lambda table: writer.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
    assert count("events") == total
    assert count("messages") == THREADS * SESSIONS * STEPS
    assert count("session_timesteps") == THREADS * SESSIONS * STEPS
    assert count("session_traces") == THREADS * SESSIONS
    rows = writer.query("SELECT num_events FROM session_traces")
    assert {r["num_events"] for r in rows} == {STEPS * 2}
    stats = writer.stats()
    assert stats["enqueued"] == stats["committed"] and stats["failed"] == 0
    writer.close()


def test_sixty_four_asyncio_tasks(cls, tmp_path):
    storage = cls.file(tmp_path / "t.db")

    async def rollout(r):
        tracer = tw.SessionTracer(storage)
        tracer.start_session(f"rollout-{r}")
        got = []
        for i in range(5):
            tracer.start_timestep(f"step-{i}", turn_number=i)
            got.append(tracer.record_event(llm_event(r, i)))
            got.append(tracer.record_event(runtime_event(i)))
            await asyncio.sleep(0)  # let the other rollouts in
        tracer.record_outcome_reward({"total_reward": float(r)})
        tracer.end_session()
        return got

    async def main():
        results = await asyncio.gather(*(rollout(r) for r in range(64)))
        await storage.aflush()
        return results

    results = asyncio.run(main())
    flat = [i for r in results for i in r]
    assert len(set(flat)) == 64 * 10 == len(flat)
    assert storage.query("SELECT COUNT(*) AS n FROM events") == [{"n": 640}]
    assert storage.query("SELECT COUNT(*) AS n FROM outcome_rewards") == [{"n": 64}]
    assert storage.query("SELECT COUNT(DISTINCT session_id) AS n FROM session_timesteps") == [{"n": 64}]
    storage.close()


def test_plain_backend_through_to_thread(tmp_path):
    """The original style: every call in asyncio.to_thread."""
    storage = tw.LibsqlTraceStorage.file(tmp_path / "t.db")

    async def rollout(r):
        tracer = tw.SessionTracer(storage)
        await asyncio.to_thread(tracer.start_session, f"r{r}")
        ids = [await asyncio.to_thread(tracer.record_event, runtime_event(i)) for i in range(5)]
        await asyncio.to_thread(tracer.end_session)
        return ids

    async def main():
        return await asyncio.gather(*(rollout(r) for r in range(16)))

    flat = [i for r in asyncio.run(main()) for i in r]
    assert sorted(flat) == list(range(1, 81))
    storage.close()
