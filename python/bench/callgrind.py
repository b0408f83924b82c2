"""Workloads for instruction counts under callgrind, which are free of the
noise that a shared machine puts into wall-clock times.

    valgrind --tool=callgrind --callgrind-out-file=OUT python bench/callgrind.py WORKLOAD N

WORKLOAD is one of:

  record  N calls of ``SessionTracer.record_event(dict)`` on a writer over a
          file, in sessions of 20 steps × 4 events (the latency loop of
          bench.py);
  c       the (c) row of bench.py with N tasks of 1 rollout × 20 steps ×
          4 events: ``AsyncSessionTracer`` over a writer, given dataclasses.

Run each twice with two values of N and divide the difference in
instructions by the difference in events: what is left is the cost of one
event, without the interpreter's start-up. ``bench/callgrind.sh`` does that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import sys
import tempfile

import trace_writer as tw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import llm_event  # noqa: E402


def record(folder: str, n: int) -> None:
    writer = tw.BufferedTraceWriter.file(os.path.join(folder, "record.db"))
    tracer = tw.SessionTracer(writer)
    events = [
        {"event_type": "cais", **dataclasses.asdict(llm_event(0, s, k))} for s in range(20) for k in range(4)
    ]
    calls, session = 0, 0
    while calls < n:
        tracer.start_session(f"s{session}")
        session += 1
        for s in range(20):
            tracer.start_timestep(f"step-{s}", s)
            for k in range(4):
                tracer.record_event(events[s * 4 + k])
        tracer.end_session()
        calls += 80
    writer.close()


def c_row(folder: str, tasks: int) -> None:
    storage = tw.BufferedTraceWriter.file(os.path.join(folder, "c.db"))
    events = [[[llm_event(t, s, k) for k in range(4)] for s in range(20)] for t in range(tasks)]
    gc.collect()
    gc.freeze()

    async def task(t: int) -> None:
        tracer = tw.AsyncSessionTracer(storage=storage)
        await tracer.start_session(f"task{t}", {"task": t})
        for s in range(20):
            await tracer.start_timestep(f"step-{s}", s)
            for ev in events[t][s]:
                await tracer.record_event(ev)
            await tracer.end_timestep(f"step-{s}")
            await asyncio.sleep(0)
        await tracer.end_session()

    async def main() -> None:
        await asyncio.gather(*(task(t) for t in range(tasks)))
        await storage.aflush()

    asyncio.run(main())
    storage.close()


def main() -> None:
    workload, n = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="trace-writer-callgrind-") as folder:
        {"record": record, "c": c_row}[workload](folder, n)


if __name__ == "__main__":
    main()
