"""Benchmark of issue 15: code written for the original binding, and the
one-import-line move to AsyncSessionTracer.

    python bench/bench.py [--out RESULTS.md] [--quick] [--runs N]

64 asyncio tasks, each one rollout after another (each with its own tracer
over one shared storage); every event is a ~1.5 KB LLM call, built as the
original client's dataclasses (`LMCAISEvent` with an `LLMCallRecord`):

  (a) the original wrapper's calling pattern (every call in
      `asyncio.to_thread`, every payload through `dataclasses.asdict`) over
      the plain backend on a file, `LibsqlTraceStorage.file(path)` (its
      defaults: WAL, synchronous NORMAL);
  (a') the same over the plain backend with the original module's own file
      settings (rollback journal DELETE, synchronous FULL), which is how the
      original binding ran a file;
  (b) the same calling pattern over the writer, `BufferedTraceWriter.file(path)`;
  (c) `AsyncSessionTracer(storage=writer)`, given the dataclasses directly.

Every row's time includes the final `aflush()`, so everything counted is
committed, and the row counts are checked. Then the per-call latency of
`SessionTracer.record_event(dict)` on the writer (p50, p99), and a profile
of where a call's time goes. Build the extension in release mode first
(`maturin develop --release`, or `pip install ./python`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time

import trace_writer as tw
from trace_writer import _trace_writer as native

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from original_shapes import (  # noqa: E402  (the tests' copy of the original's shapes)
    LLMCallRecord,
    LLMContentPart,
    LLMMessage,
    LLMUsage,
    LMCAISEvent,
    ThreadHopTracer,
    TimeRecord,
)

TASKS = 64

PROMPT = (
    "You are playing Crafter. Rollout {r}, step {s}. You see grass to the north, a tree to the east and "
    "water to the south. Choose the next action."
)
ANSWER = (
    "The tree to the east gives wood for a table. I will move east."
)


def llm_event(rollout: int, step: int, k: int = 0) -> LMCAISEvent:
    """An LLM call with its call record: about 1.5 KB as JSON."""
    return LMCAISEvent(
        system_instance_id="crafter-agent",
        time_record=TimeRecord(event_time=1735787046.0 + step, message_time=step * 4 + k),
        metadata={"rollout": rollout, "step": step, "temperature": 0.7},
        model_name="gpt-4o-mini",
        provider="openai",
        input_tokens=412,
        output_tokens=38,
        total_tokens=450,
        cost_usd=0.000085,
        latency_ms=640,
        span_id=f"span-{rollout}-{step}-{k}",
        trace_id=f"trace-{rollout}",
        call_records=[
            LLMCallRecord(
                call_id=f"call-{rollout}-{step}-{k}",
                api_type="chat_completions",
                provider="openai",
                model_name="gpt-4o-mini",
                latency_ms=640,
                input_messages=[
                    LLMMessage("system", [LLMContentPart("text", "You are a careful Crafter agent.")]),
                    LLMMessage("user", [LLMContentPart("text", PROMPT.format(r=rollout, s=step))]),
                ],
                output_messages=[LLMMessage("assistant", [LLMContentPart("text", ANSWER)])],
                usage=LLMUsage(412, 38, 450, cost_usd=0.000085),
                finish_reason="stop",
                metadata={"seed": rollout},
            )
        ],
    )


class Workload:
    """Each of TASKS tasks runs `rollouts` rollouts of `steps` timesteps of
    `events` LLM events each."""

    def __init__(self, rollouts: int, steps: int, events: int):
        self.rollouts, self.steps, self.events = rollouts, steps, events

    @property
    def total_events(self) -> int:
        return TASKS * self.rollouts * self.steps * self.events

    def describe(self) -> str:
        return f"{TASKS} tasks × {self.rollouts} rollouts × {self.steps} steps × {self.events} events"


async def run(storage, make_tracer, work: Workload) -> float:
    """Runs the workload; returns the seconds it took, the final flush included."""
    events = [[[llm_event(t, s, k) for k in range(work.events)] for s in range(work.steps)] for t in range(TASKS)]
    gc.collect()
    gc.freeze()  # the pre-built events stand for ones a rollout makes and drops

    async def task(t: int):
        tracer = make_tracer()
        for r in range(work.rollouts):
            await tracer.start_session(f"task{t}-rollout{r}", {"task": t})
            for s in range(work.steps):
                await tracer.start_timestep(f"step-{s}", s)
                for ev in events[t][s]:
                    await tracer.record_event(ev)
                await tracer.end_timestep(f"step-{s}")
                await asyncio.sleep(0)  # a real rollout awaits its LLM here
            await tracer.end_session()

    start = time.perf_counter()
    await asyncio.gather(*(task(t) for t in range(TASKS)))
    await storage.aflush()
    secs = time.perf_counter() - start
    gc.unfreeze()
    return secs


def check(storage, work: Workload) -> None:
    n = storage.query("SELECT COUNT(*) AS n FROM events WHERE event_type = :kind", {"kind": "cais"})[0]["n"]
    if n != work.total_events:
        raise SystemExit(f"expected {work.total_events} events, found {n}")


def row(folder: str, name: str, work: Workload) -> float:
    stem = name.replace("'", "1")
    path = os.path.join(folder, f"{stem}-{time.monotonic_ns()}.db")
    if name == "a":
        storage = tw.LibsqlTraceStorage.file(path)
        make = lambda: ThreadHopTracer(storage)  # noqa: E731
    elif name == "a'":
        storage = tw.LibsqlTraceStorage.file(path, journal_mode="delete", synchronous="full")
        make = lambda: ThreadHopTracer(storage)  # noqa: E731
    elif name == "b":
        storage = tw.BufferedTraceWriter.file(path)
        make = lambda: ThreadHopTracer(storage)  # noqa: E731
    else:
        storage = tw.BufferedTraceWriter.file(path)
        make = lambda: tw.AsyncSessionTracer(storage=storage)  # noqa: E731
    secs = asyncio.run(run(storage, make, work))
    check(storage, work)
    storage.close()
    return work.total_events / secs


def percentile(sorted_ns: list[int], p: float) -> float:
    k = min(len(sorted_ns) - 1, int(round(p / 100 * (len(sorted_ns) - 1))))
    return sorted_ns[k] / 1000.0


def latency(folder: str, n: int) -> dict:
    """Per-call latency of SessionTracer.record_event(dict) on the writer,
    µs, one call timed at a time, in sessions of 20 steps × 4 events; then
    where the time goes."""
    path = os.path.join(folder, f"latency-{time.monotonic_ns()}.db")
    writer = tw.BufferedTraceWriter.file(path)
    tracer = tw.SessionTracer(writer)
    dcs = [llm_event(0, s, k) for s in range(20) for k in range(4)]
    events = [{"event_type": "cais", **dataclasses.asdict(e)} for e in dcs]
    clock = time.perf_counter_ns

    def loop(payloads) -> list[int]:
        samples, calls, session = [], 0, 0
        while calls < n:
            tracer.start_session(f"latency-{id(payloads)}-{session}")
            session += 1
            for s in range(20):
                tracer.start_timestep(f"step-{s}", s)
                for k in range(4):
                    ev = payloads[s * 4 + k]
                    t0 = clock()
                    tracer.record_event(ev)
                    samples.append(clock() - t0)
            tracer.end_session()
            calls += 80
        samples = samples[1000:]  # warm-up: id blocks, allocator, caches
        samples.sort()
        return samples

    gc.collect()
    gc.freeze()
    d = loop(events)
    dc = loop(dcs)
    gc.unfreeze()
    out = {
        "n": len(d),
        "p50": percentile(d, 50),
        "p99": percentile(d, 99),
        "mean": statistics.fmean(d) / 1000,
        "dc_p50": percentile(dc, 50),
        "dc_p99": percentile(dc, 99),
    }

    ev, dcev = events[0], dcs[0]
    reps = 20000

    def per_call(fn) -> float:
        t0 = clock()
        fn()
        return (clock() - t0) / reps / 1000

    out["convert_direct"] = per_call(lambda: native._bench_convert(ev, "direct", reps))
    out["convert_dataclass"] = per_call(lambda: native._bench_convert(dcev, "direct", reps))
    out["asdict"] = per_call(lambda: [dataclasses.asdict(dcev) for _ in range(reps)])
    out["json_dumps"] = per_call(lambda: [json.dumps(ev) for _ in range(reps)])
    writer.ensure_session("profile")

    def inserts():
        for _ in range(reps):
            writer.insert_event("profile", None, ev)

    out["insert_event"] = per_call(inserts)
    writer.flush()
    writer.close()
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs shared with other builds (load average at the end: {load}), "
        f"{platform.system()} {platform.release()}, CPython {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version} (stdlib), trace_writer {tw.__version__}"
    )


def spread(xs: list[float], fmt: str) -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return f"{format(statistics.median(xs), fmt)} ({format(min(xs), fmt)}–{format(max(xs), fmt)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="also write the markdown report here")
    ap.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    ap.add_argument("--runs", type=int, default=3, help="runs of the three rows (default 3)")
    ap.add_argument("--dir", help="folder for the databases (default: a temp folder)")
    args = ap.parse_args()

    if args.quick:
        slow, fast, lat_n = Workload(1, 2, 2), Workload(2, 5, 4), 5_000
    else:
        slow, fast, lat_n = Workload(1, 5, 4), Workload(5, 20, 4), 50_000
    folder = args.dir or tempfile.mkdtemp(prefix="trace-writer-bench-")
    print(f"databases in {folder}", file=sys.stderr)

    runs = []
    for i in range(args.runs):
        a = row(folder, "a", slow)
        a1 = row(folder, "a'", slow)
        b = row(folder, "b", slow)
        c = row(folder, "c", fast)
        runs.append((a, b, c, a1))
        print(
            f"run {i + 1}: (a) {a:,.0f}  (a') {a1:,.0f}  (b) {b:,.0f}  (c) {c:,.0f} events/s  "
            f"(c)/(a) {c / a:.1f}×  (c)/(a') {c / a1:.1f}×",
            file=sys.stderr,
        )
    print("record_event latency ...", file=sys.stderr)
    lat = latency(folder, lat_n)

    a_s, b_s, c_s, a1_s = ([r[i] for r in runs] for i in range(4))
    ca = [c / a for a, _, c, _ in runs]
    ca1 = [c / a1 for _, _, c, a1 in runs]
    a1a = [a1 / a for a, _, _, a1 in runs]
    ba = [b / a for a, b, _, _ in runs]
    cb = [c / b for _, b, c, _ in runs]
    size = len(json.dumps(dataclasses.asdict(llm_event(0, 0))))
    ok = lambda cond: "met" if cond else "**missed**"  # noqa: E731
    lines = [
        "# Python benchmark: the original client's code, and AsyncSessionTracer",
        "",
        f"Machine: {machine()}.",
        f"Event: an LLM call with its call record, built as the original's dataclasses, {size} bytes as JSON. "
        f"Build: release. {args.runs} runs; each cell is the median (min–max) over the runs, and each ratio is "
        "taken within a run, then summarized the same way.",
        "",
        "| configuration | workload | events/s | vs (a) | vs (a') |",
        "|---|---|---:|---:|---:|",
        f"| (a) original calling pattern (`asyncio.to_thread` + `asdict`), plain backend on a file (WAL, NORMAL) | {slow.describe()} | {spread(a_s, ',.0f')} | 1.0× | |",
        f"| (a') the same, plain backend with the original module's file settings (journal DELETE, synchronous FULL) | {slow.describe()} | {spread(a1_s, ',.0f')} | {spread(a1a, '.2f')}× | 1.0× |",
        f"| (b) the same calling pattern over `BufferedTraceWriter.file` | {slow.describe()} | {spread(b_s, ',.0f')} | {spread(ba, '.2f')}× | |",
        f"| (c) `AsyncSessionTracer(storage=writer)`, dataclasses given directly | {fast.describe()} | {spread(c_s, ',.0f')} | **{spread(ca, '.1f')}×** | **{spread(ca1, '.1f')}×** |",
        "",
        f"(c)/(b) in the same runs: {spread(cb, '.1f')}×. Every row's time includes the final `aflush()`; the "
        "event rows are counted after each run.",
        "",
        f"Per-call latency of `SessionTracer.record_event(event)` on the writer, one call timed at a time "
        f"({lat['n']:,} calls in sessions of 20 steps × 4 events), with a dict: **p50 {lat['p50']:.2f} µs, "
        f"p99 {lat['p99']:.1f} µs** (mean {lat['mean']:.1f} µs); with the dataclass: p50 {lat['dc_p50']:.1f} µs, "
        f"p99 {lat['dc_p99']:.1f} µs.",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| (c) ≥ 10× (a) | {spread(ca, '.1f')}× | {ok(min(ca) >= 10)} |",
        f"| (c) ≥ 10× (a') (the original's own file settings) | {spread(ca1, '.1f')}× | {ok(min(ca1) >= 10)} |",
        f"| (c) ≥ 20,000 events/s | {spread(c_s, ',.0f')} | {ok(min(c_s) >= 20_000)} |",
        f"| p50 ≤ 5 µs | {lat['p50']:.2f} µs | {ok(lat['p50'] <= 5)} |",
        f"| p99 ≤ 50 µs | {lat['p99']:.1f} µs | {ok(lat['p99'] <= 50)} |",
        "",
        "Where a call's time goes (mean µs per call over 20,000 calls of the same event, same run):",
        "",
        "| step | µs/call |",
        "|---|---:|",
        f"| dict → model (the bindings' conversion) | {lat['convert_direct']:.2f} |",
        f"| dataclass → model, walked natively | {lat['convert_dataclass']:.2f} |",
        f"| for scale: `dataclasses.asdict(event)` in Python (what the original pattern adds) | {lat['asdict']:.2f} |",
        f"| for scale: `json.dumps(event)` in Python | {lat['json_dumps']:.2f} |",
        f"| `writer.insert_event(dict)` (convert + validate + serialize the row + enqueue) | {lat['insert_event']:.2f} |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
