"""Shared fixtures: both storage classes, the repository's fixture trace,
realistic events, and a helper that writes a whole trace through the
storage methods (as the Rust tests' ``write_trace`` does)."""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import sys

import pytest

import trace_writer as tw

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "session_trace.json"

CLASSES = {"plain": tw.LibsqlTraceStorage, "writer": tw.BufferedTraceWriter}


@pytest.fixture(params=sorted(CLASSES))
def cls(request):
    """Each storage class in turn."""
    return CLASSES[request.param]


@pytest.fixture(params=["memory", "file"])
def storage(request, cls, tmp_path):
    """Each class on :memory: and on a tmp file; closed at the end."""
    if request.param == "memory":
        s = cls.memory()
    else:
        s = cls.file(tmp_path / "traces.db")
    yield s
    s.close()


def fixture_trace() -> dict:
    return json.loads(FIXTURE.read_text())


def expected_trace(trace: dict) -> dict:
    """What reading ``trace`` back gives: its canonical form, with the
    histories holding every event and message of the steps first."""
    t = copy.deepcopy(trace)
    steps = t.get("session_time_steps", [])
    t["event_history"] = [e for s in steps for e in s.get("events", [])] + t.get(
        "event_history", []
    )
    t["markov_blanket_message_history"] = [
        m for s in steps for m in s.get("markov_blanket_messages", [])
    ] + t.get("markov_blanket_message_history", [])
    return tw.canonical_trace(t)


def write_trace(storage, trace: dict) -> list[int]:
    """Writes ``trace`` (steps with their events and messages, then events
    and messages outside steps) and returns the event ids."""
    sid = trace["session_id"]
    storage.ensure_session(sid, trace["created_at"], trace.get("metadata", {}))
    ids = []
    for step in trace.get("session_time_steps", []):
        bare = {k: v for k, v in step.items() if k not in ("events", "markov_blanket_messages")}
        bare.pop("completed_at", None)
        ts = storage.ensure_timestep(sid, bare)
        for e in step.get("events", []):
            ids.append(storage.insert_event(sid, ts, e))
        for m in step.get("markov_blanket_messages", []):
            storage.insert_message(sid, ts, m)
        if step.get("completed_at") is not None:
            storage.update_timestep(sid, step["step_id"], step["completed_at"])
    for e in trace.get("event_history", []):
        ids.append(storage.insert_event(sid, None, e))
    for m in trace.get("markov_blanket_message_history", []):
        storage.insert_message(sid, None, m)
    return ids


def llm_event(rollout: int, step: int) -> dict:
    """A realistic LLM-call event of about 1.5 KB, with its call record."""
    prompt = (
        f"You are playing Crafter. Rollout {rollout}, step {step}. You see grass to the north, "
        "a tree to the east and water to the south. Your inventory holds 2 wood and 1 sapling. "
        "Health 9, food 7, drink 6, energy 8. Choose the next action and explain briefly."
    )
    answer = (
        "The tree to the east can give more wood, which I need for a table and a pickaxe. "
        "I will move east and collect wood."
    )
    return {
        "event_type": "cais",
        "system_instance_id": "crafter-agent",
        "time_record": {"event_time": 1735787046.0 + step, "message_time": step},
        "metadata": {"rollout": rollout, "step": step, "temperature": 0.7},
        "model_name": "gpt-4o-mini",
        "provider": "openai",
        "input_tokens": 412,
        "output_tokens": 38,
        "total_tokens": 450,
        "cost_usd": 0.000085,
        "latency_ms": 640,
        "span_id": f"span-{rollout}-{step}",
        "trace_id": f"trace-{rollout}",
        "call_records": [
            {
                "call_id": f"call-{rollout}-{step}",
                "api_type": "chat_completions",
                "model_name": "gpt-4o-mini",
                "provider": "openai",
                "started_at": "2025-01-02T03:04:05Z",
                "completed_at": "2025-01-02T03:04:05.640Z",
                "latency_ms": 640,
                "input_messages": [
                    {"role": "system", "parts": [{"type": "text", "text": "You are a careful Crafter agent."}]},
                    {"role": "user", "parts": [{"type": "text", "text": prompt}]},
                ],
                "output_messages": [
                    {"role": "assistant", "parts": [{"type": "text", "text": answer}]}
                ],
                "output_tool_calls": [
                    {"name": "act", "arguments_json": '{"action": "move_east"}', "call_id": f"tool-{step}", "index": 0}
                ],
                "usage": {"input_tokens": 412, "output_tokens": 38, "total_tokens": 450, "cost_usd": 0.000085},
                "finish_reason": "tool_calls",
                "metadata": {"seed": rollout},
            }
        ],
    }


def env_event(step: int) -> dict:
    return {
        "event_type": "environment",
        "system_instance_id": "crafter-env",
        "time_record": {"event_time": 1735787046.5 + step},
        "reward": 0.1 * step,
        "terminated": False,
        "truncated": False,
        "system_state_after": {"pos": [step, step + 1], "health": 9},
    }


def runtime_event(step: int) -> dict:
    return {
        "event_type": "runtime",
        "system_instance_id": "runtime",
        "time_record": {"event_time": 1735787046.7 + step},
        "actions": [step % 17],
    }


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


class Locked:
    """Holds SQLite's write lock on ``path`` from another process (two
    SQLite libraries in one process do not see each other's locks), so the
    writer's commits wait until ``release()``."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "locked":
            raise RuntimeError(f"the locker did not start: {line!r}")

    def release(self):
        if self.proc is not None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def locked():
    held = []

    def lock(path):
        lk = Locked(path)
        held.append(lk)
        return lk

    yield lock
    for lk in held:
        lk.release()


def pytest_sessionfinish(session, exitstatus):
    """Fail loudly if nothing ran (everything skipped, or deselected)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == 0 and passed == 0:
        session.exitstatus = 1
