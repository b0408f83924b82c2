"""The main job, from Python: many concurrent RL rollouts logged through
SessionTracer, from asyncio, with no threads.

    python examples/rollout_logging.py [--rollouts 256] [--db traces.db]
        [--backend writer|plain] [--journal wal|delete]

Each rollout is a realistic session: 20 steps, each with an LLM call (with
its call record), an environment step and two messages; then an outcome
reward and five event rewards. All rollouts run at once as asyncio tasks,
each with its own SessionTracer over one shared storage. The writer's calls
are made straight from the event loop; `--backend plain` runs the original
style instead (every call in asyncio.to_thread) for comparison.

A progress bar goes to stderr; a summary table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

import trace_writer as tw

STEPS = 20
EVENT_REWARDS = 5


def llm_event(rollout: int, step: int, observation: str) -> dict:
    answer = f"I will move {random.choice(['north', 'south', 'east', 'west'])} and collect wood."
    return {
        "event_type": "cais",
        "system_instance_id": f"agent-{rollout}",
        "time_record": {"event_time": time.time(), "message_time": step},
        "model_name": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 412,
        "output_tokens": 37,
        "total_tokens": 449,
        "cost_usd": 0.000085,
        "latency_ms": 640,
        "call_records": [
            {
                "call_id": f"call-{rollout}-{step}",
                "api_type": "chat_completions",
                "model_name": "gpt-4o-mini",
                "input_messages": [{"role": "user", "parts": [{"type": "text", "text": observation}]}],
                "output_messages": [{"role": "assistant", "parts": [{"type": "text", "text": answer}]}],
                "usage": {"input_tokens": 412, "output_tokens": 37, "total_tokens": 449},
                "finish_reason": "stop",
            }
        ],
    }


def env_event(step: int, reward: float, done: bool) -> dict:
    return {
        "event_type": "environment",
        "system_instance_id": "crafter-env",
        "time_record": {"event_time": time.time(), "message_time": step},
        "reward": reward,
        "terminated": done,
        "system_state_after": {"step": step, "health": 9},
    }


class Progress:
    """A plain progress bar on stderr."""

    def __init__(self, total: int):
        self.total, self.done, self.failed = total, 0, 0
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last = -1

    def tick(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        pct = self.done * 100 // self.total
        if self.tty or pct // 10 != self.last // 10 or self.done == self.total:
            self.last = pct
            width = 40
            fill = width * self.done // self.total
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            end = "\n" if self.done == self.total or not self.tty else ""
            print(
                f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} rollouts "
                f"{rate:,.0f}/s {self.failed} failed",
                end=end,
                file=sys.stderr,
                flush=True,
            )


async def rollout(storage, n: int, to_thread: bool) -> None:
    """One rollout, as an RL runner would log it."""
    tracer = tw.SessionTracer(storage)

    async def call(fn, *args):
        return await asyncio.to_thread(fn, *args) if to_thread else fn(*args)

    await call(tracer.start_session, f"rollout-{n}", {"env": "crafter", "seed": n})
    event_ids = []
    total = 0.0
    for step in range(STEPS):
        await call(tracer.start_timestep, f"step-{step}", step)
        observation = f"step {step}: grass to the north, a tree to the east"
        await call(tracer.record_message, {"content": {"text": observation}, "message_type": "user"})
        await asyncio.sleep(0)  # the LLM call would be awaited here
        event_ids.append(await call(tracer.record_event, llm_event(n, step, observation)))
        await call(tracer.record_message, {"content": {"text": "move_east"}, "message_type": "assistant"})
        reward = random.random() / 10
        total += reward
        await call(tracer.record_event, env_event(step, reward, step == STEPS - 1))
    await call(tracer.record_outcome_reward, {"total_reward": total, "total_steps": STEPS})
    for eid in event_ids[:EVENT_REWARDS]:
        await call(tracer.record_event_reward, eid, {"reward_value": 0.1, "reward_type": "shaped", "source": "environment"})
    await call(tracer.end_session)


async def main() -> int:
    ap = argparse.ArgumentParser(description="Log many concurrent rollouts.")
    ap.add_argument("--rollouts", type=int, default=256)
    ap.add_argument("--db", default="traces.db")
    ap.add_argument("--backend", choices=["writer", "plain"], default="writer")
    ap.add_argument("--journal", choices=["wal", "delete"], default="wal")
    args = ap.parse_args()

    if args.backend == "writer":
        storage = tw.BufferedTraceWriter.file(args.db, journal_mode=args.journal)
    else:
        storage = tw.LibsqlTraceStorage.file(args.db, journal_mode=args.journal)
    before = storage.query("SELECT COUNT(*) AS n FROM events")[0]["n"]
    print(f"{args.rollouts} rollouts into {args.db} ({args.backend}, {args.journal})", file=sys.stderr)

    progress = Progress(args.rollouts)
    start = time.perf_counter()

    async def tracked(n: int) -> None:
        try:
            await rollout(storage, n, to_thread=args.backend == "plain")
            progress.tick(True)
        except tw.TraceWriterError as e:
            progress.tick(False)
            print(f"\nrollout {n} failed: {e}", file=sys.stderr)

    async with storage:
        await asyncio.gather(*(tracked(n) for n in range(args.rollouts)))
        await storage.aflush()
        elapsed = time.perf_counter() - start
        count = lambda t: storage.query(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]
        events = count("events") - before
        stats = storage.stats() if isinstance(storage, tw.BufferedTraceWriter) else None
        rows = [
            ("rollouts", f"{args.rollouts - progress.failed} ok, {progress.failed} failed"),
            ("events written", f"{events:,}"),
            ("sessions in the database", f"{count('session_traces'):,}"),
            ("messages in the database", f"{count('messages'):,}"),
            ("wall time", f"{elapsed:.2f} s"),
            ("events per second", f"{events / elapsed:,.0f}"),
        ]
        if stats:
            rows += [
                ("writer batches", f"{stats['batches']:,}"),
                ("mean batch size", f"{stats['mean_batch_ops']:.1f} operations"),
                ("failed writes", f"{stats['failed']}"),
            ]
    print("\n| what | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    return 1 if progress.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
