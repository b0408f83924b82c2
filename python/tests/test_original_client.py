"""Code written for the original binding runs unchanged: its dataclasses,
its wrapper's calling pattern (thread hops, asdict, dict params), its module
functions and ``except ValueError``; and ``AsyncSessionTracer`` runs the
same rollouts on the event loop's thread."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import subprocess
import sys
import threading
import time

import pytest

import trace_writer as tw
from original_shapes import (
    EventReward,
    OutcomeReward,
    ThreadHopTracer,
    env_event,
    llm_event,
    message,
    runtime_event,
)

STEPS = 3
TASKS = 8
SESSIONS_PER_TASK = 2


@pytest.fixture(params=["plain-file", "writer-file", "writer-memory"])
def store(request, tmp_path):
    """The three storages the original client's code must run on."""
    if request.param == "plain-file":
        s = tw.LibsqlTraceStorage.file(tmp_path / "plain.db")
    elif request.param == "writer-file":
        s = tw.BufferedTraceWriter.file(tmp_path / "writer.db")
    else:
        s = tw.BufferedTraceWriter.memory()
    yield s
    s.close()


async def rollout(tracer, sid: str) -> dict:
    await tracer.start_session(sid, {"task": sid})
    first = None
    for s in range(STEPS):
        await tracer.start_timestep(f"step-{s}", s)
        eid = await tracer.record_event(llm_event(s))
        first = first if first is not None else eid
        await tracer.record_event(env_event(s, terminated=s == STEPS - 1))
        await tracer.record_event(runtime_event(s))
        await tracer.record_message(message(s))
        await tracer.end_timestep(f"step-{s}")
    await tracer.record_outcome_reward(OutcomeReward(total_reward=1.5, total_steps=STEPS))
    await tracer.record_event_reward(first, EventReward(reward_value=0.25, reward_type="shaped"))
    return await tracer.end_session()


async def run_rollouts(make_tracer, store) -> dict[str, dict]:
    ended: dict[str, dict] = {}

    async def task(t: int):
        tracer = make_tracer()
        for r in range(SESSIONS_PER_TASK):
            sid = f"t{t}-r{r}"
            ended[sid] = await rollout(tracer, sid)

    await asyncio.gather(*(task(t) for t in range(TASKS)))
    await store.aflush()
    return ended


async def check_rows(store, query, ended: dict[str, dict]) -> None:
    n = TASKS * SESSIONS_PER_TASK
    for table, per_session in [
        ("session_traces", 1),
        ("session_timesteps", STEPS),
        ("events", 3 * STEPS),
        ("messages", STEPS),
        ("outcome_rewards", 1),
        ("event_rewards", 1),
    ]:
        rows = await query(f"SELECT COUNT(*) AS n FROM {table}")
        assert rows == [{"n": n * per_session}], table
    for sid, trace in ended.items():
        kinds = await query(
            "SELECT event_type, COUNT(*) AS n FROM events WHERE session_id = :sid "
            "GROUP BY event_type ORDER BY event_type",
            {"sid": sid},
        )
        assert kinds == [
            {"event_type": "cais", "n": STEPS},
            {"event_type": "environment", "n": STEPS},
            {"event_type": "runtime", "n": STEPS},
        ]
        stored = await store.aget_session(sid)
        assert stored["event_history"] == trace["event_history"]
        assert stored["markov_blanket_message_history"] == trace["markov_blanket_message_history"]
        assert [e["event_type"] for e in stored["event_history"][:3]] == ["cais", "environment", "runtime"]
        # The dataclass's extra field is not a model field; the rest is kept.
        cais = stored["event_history"][0]
        assert cais["call_records"][0]["started_at"] == "2025-01-02T03:04:05Z"
        assert cais["call_records"][0]["input_messages"][0]["parts"][0]["text"] == "what next?"
        assert stored["event_history"][1]["terminated"] is False
        assert stored["event_history"][-2]["terminated"] is True


def test_the_original_calling_pattern_runs_unchanged(store):
    async def main():
        ended = await run_rollouts(lambda: ThreadHopTracer(store), store)
        await check_rows(store, ThreadHopTracer(store).query_traces, ended)

    asyncio.run(main())


def test_async_session_tracer_runs_the_same_rollouts(store):
    async def main():
        ended = await run_rollouts(lambda: tw.AsyncSessionTracer(storage=store), store)
        tracer = tw.AsyncSessionTracer(storage=store)
        await check_rows(store, tracer.query_traces, ended)
        history = await tracer.get_session_history(limit=3)
        assert len(history) == 3
        assert history[0]["created_at"] >= history[-1]["created_at"]
        assert await tracer.delete_session("t0-r0") is True
        assert await tracer.get_session("t0-r0") is None
        assert await tracer.delete_session("t0-r0") is False
        await tracer.close()  # a storage passed in stays open
        assert await tracer.query_traces("SELECT COUNT(*) AS n FROM session_traces") == [
            {"n": TASKS * SESSIONS_PER_TASK - 1}
        ]

    asyncio.run(main())


def test_async_session_tracer_writes_on_the_loop_thread_over_a_writer():
    """Over a writer, calls are made on the loop's thread: no thread hop."""

    async def main():
        loop_thread = threading.get_ident()
        seen_threads = set()
        tracer = tw.AsyncSessionTracer(db_url=":memory:")
        real = tracer.session_tracer

        class Spy:
            def __getattr__(self, name):
                fn = getattr(real, name)

                def call(*a, **k):
                    seen_threads.add((name, threading.get_ident() == loop_thread))
                    return fn(*a, **k)

                return call

        tracer._tracer = Spy()
        async with tracer.session("s") as sid:
            async with tracer.timestep("a", 0):
                await tracer.record_event(runtime_event(0))
                await tracer.record_message(message(0))
        names = {n for n, _ in seen_threads}
        assert names == {
            "start_session",
            "astart_timestep",
            "record_event",
            "record_message",
            "aend_timestep",
            "aend_session",
        }
        # Every call starts on the loop's thread (no thread hop); one that
        # must wait finishes on the runtime without blocking the loop.
        assert all(on_loop for _, on_loop in seen_threads)
        assert (await tracer.get_session(sid))["session_id"] == "s"
        await tracer.close()
        with pytest.raises(tw.WriterClosedError):
            tracer.storage.ensure_session("x")

    asyncio.run(main())


def test_constructor_forms(tmp_path):
    class Config:
        connection_string = str(tmp_path / "cfg.db")
        turso_auth_token = None

    async def main():
        for tracer in [
            tw.AsyncSessionTracer(),
            tw.AsyncSessionTracer(db_url=":memory:"),
            tw.AsyncSessionTracer(db_url=str(tmp_path / "url.db")),
            tw.AsyncSessionTracer(storage_config=Config()),
        ]:
            assert isinstance(tracer.storage, tw.BufferedTraceWriter)
            await tracer.initialize()
            sid = await tracer.start_session()
            await tracer.record_event(env_event(1))
            trace = await tracer.end_session()
            assert trace["session_id"] == sid
            assert tracer.current_session == trace and tracer.current_session is tracer.current_session
            await tracer.close()
        plain = tw.LibsqlTraceStorage.memory()
        t = tw.AsyncSessionTracer(storage=plain, auto_save=False)
        async with t.session("s"):
            assert await t.record_event(env_event(1)) is None
        assert len((await t.get_session("s"))["event_history"]) == 1
        plain.close()

    asyncio.run(main())
    assert (tmp_path / "cfg.db").exists() and (tmp_path / "url.db").exists()


def test_hooks_are_awaited_with_the_original_names_and_kwargs():
    calls = []

    class Hooks:
        async def trigger(self, name, **kwargs):
            calls.append((name, sorted(kwargs)))

    async def main():
        tracer = tw.AsyncSessionTracer(hooks=Hooks())
        async with tracer.session("s", metadata={"a": 1}):
            async with tracer.timestep("t", 0):
                await tracer.record_event(runtime_event(0))
                await tracer.record_message(message(0))
        assert tracer.current_step is None
        await tracer.close()

    asyncio.run(main())
    assert calls == [
        ("session_start", ["metadata", "session_id"]),
        ("timestep_start", ["session_id", "step"]),
        ("event_recorded", ["event_obj"]),
        ("message_recorded", ["message"]),
        ("timestep_end", ["session_id", "step"]),
        ("before_save", ["session"]),
        ("after_save", ["session"]),
        ("session_end", ["session"]),
    ]


def test_current_session_is_the_last_trace_and_the_returned_dict_is_not_kept():
    seen = []

    class Hooks:
        async def trigger(self, name, **kwargs):
            if name == "before_save":
                seen.append(kwargs["session"])

    async def main():
        tracer = tw.AsyncSessionTracer(hooks=Hooks())
        assert tracer.current_session is None and tracer.session_tracer.last_trace() is None
        traces = []
        for sid in ("s1", "s2"):
            async with tracer.session(sid):
                async with tracer.timestep("t", 0):
                    await tracer.record_event(runtime_event(0))
                    await tracer.record_message(message(0))
            traces.append(tracer.current_session)
        first, second = traces
        assert first["session_id"] == "s1" and second["session_id"] == "s2"
        assert len(second["event_history"]) == 1 and len(second["markov_blanket_message_history"]) == 1
        # The original passes the previous session's trace to before_save.
        assert seen == [None, first]
        # The same dict on every read, until the next session ends.
        assert tracer.current_session is second
        # The dict end_session returns is the caller's alone.
        await tracer.start_session("s3")
        returned = await tracer.end_session()
        assert not any(r is tracer.__dict__ for r in gc.get_referrers(returned))
        assert tracer.current_session == returned and tracer.current_session is not returned
        assert tracer.session_tracer.last_trace() == returned
        await tracer.close()

    asyncio.run(main())


# --- inputs: what is accepted, what is refused -------------------------------------------


def test_untagged_dicts_get_the_inferred_kind(storage):
    storage.ensure_session("s")
    cases = [
        (dataclasses.asdict(llm_event(0)), "cais"),
        ({"system_instance_id": "x", "time_record": {"event_time": 1.0}, "input_tokens": 3, "model_name": "m"}, "cais"),
        (dataclasses.asdict(env_event(0)), "environment"),
        ({"system_instance_id": "x", "time_record": {"event_time": 1.0}, "truncated": True, "actions": [1]}, "environment"),
        (dataclasses.asdict(runtime_event(0)), "runtime"),
        (runtime_event(1), "runtime"),
        (env_event(1), "environment"),
        (llm_event(1), "cais"),
    ]
    for event, _ in cases:
        storage.insert_event("s", None, event)
    storage.flush()
    got = [r["event_type"] for r in storage.query("SELECT event_type FROM events ORDER BY id")]
    assert got == [kind for _, kind in cases]
    with pytest.raises(tw.InvalidInputError, match="event_type") as info:
        storage.insert_event("s", None, {"system_instance_id": "x", "time_record": {"event_time": 1.0}})
    assert isinstance(info.value, ValueError)


def test_objects_with_to_dict_are_accepted_everywhere(storage):
    class Obj:
        def __init__(self, d):
            self.d = d

        def to_dict(self):
            return self.d

    storage.ensure_session("s", metadata={"cfg": Obj({"lr": 0.1})})
    step_id = storage.ensure_timestep("s", Obj({"step_id": "a", "step_index": 0, "timestamp": "2025-01-01T00:00:00Z"}))
    storage.insert_event("s", step_id, Obj(dataclasses.asdict(env_event(0))))
    storage.insert_message("s", step_id, message(0))
    storage.insert_outcome_reward("s", OutcomeReward(total_reward=2.0))
    storage.insert_event_reward("s", 1, None, None, Obj({"reward_value": 1}))
    trace = storage.get_session("s")
    assert trace["metadata"] == {"cfg": {"lr": 0.1}}
    assert trace["session_time_steps"][0]["events"][0]["reward"] == 0.0
    assert trace["markov_blanket_message_history"][0]["content"] == {"text": "observation 0", "json_payload": None}
    with pytest.raises(TypeError):
        storage.insert_event("s", None, object())


@pytest.mark.parametrize(
    "change, field",
    [
        ({"terminated": "yes"}, "terminated"),
        ({"truncated": 1}, "truncated"),
        ({"reward": True}, "reward"),
        ({"reward": "1.0"}, "reward"),
        ({"reward": float("nan")}, "reward"),
        ({"system_instance_id": 5}, "system_instance_id"),
    ],
)
def test_types_are_checked_as_serde_checks_them(storage, change, field):
    storage.ensure_session("s")
    event = {**dataclasses.asdict(env_event(0)), **change}
    with pytest.raises(tw.InvalidInputError, match=field):
        storage.insert_event("s", None, event)
    # Through a dataclass too.
    with pytest.raises(tw.InvalidInputError, match=field):
        storage.insert_event("s", None, dataclasses.replace(env_event(0), **change))
    # An int is a float; nothing else was queued.
    assert storage.insert_event("s", None, {**dataclasses.asdict(env_event(0)), "reward": 3}) == 1
    assert storage.get_session("s")["event_history"][0]["reward"] == 3.0


def test_more_refusals_name_the_field(storage):
    storage.ensure_session("s")
    with pytest.raises(tw.InvalidInputError, match="actions"):
        storage.insert_event("s", None, {**dataclasses.asdict(runtime_event(0)), "actions": [True]})
    with pytest.raises(tw.InvalidInputError, match="total_reward"):
        storage.insert_outcome_reward("s", {"total_reward": False})
    with pytest.raises(tw.InvalidInputError, match="message_type"):
        storage.insert_message("s", None, {**dataclasses.asdict(message(0)), "message_type": 3})


# --- cycles and depth ---------------------------------------------------------------------


def nested(depth: int) -> dict:
    """A dict ``depth`` levels deep (the outer dict is level 1)."""
    d: dict = {"leaf": 1}
    for _ in range(depth - 1):
        d = {"x": d}
    return d


def test_cycles_raise_and_name_the_field(storage):
    storage.ensure_session("s")
    d: dict = {}
    d["d"] = d
    with pytest.raises(tw.InvalidInputError, match=r"metadata.*`d`.*cycle"):
        storage.ensure_session("s2", metadata=d)
    lst: list = []
    lst.append(lst)
    event = {**dataclasses.asdict(env_event(0)), "system_state_after": {"obs": lst}}
    with pytest.raises(tw.InvalidInputError, match=r"system_state_after\.obs\[0\].*cycle"):
        storage.insert_event("s", None, event)
    with pytest.raises(tw.InvalidInputError, match="cycle"):
        storage.query("SELECT :p AS p", {"p": d})
    with pytest.raises(tw.InvalidInputError, match="cycle"):
        storage.query("SELECT ? AS p", [lst])
    # A dataclass that contains itself.
    ev = env_event(0)
    ev.metadata["self"] = ev
    with pytest.raises(tw.InvalidInputError, match=r"metadata\.self.*cycle"):
        storage.insert_event("s", None, ev)
    # Nothing was written; the same object twice (not a cycle) is fine.
    shared = {"k": 1}
    storage.ensure_session("s3", metadata={"a": shared, "b": shared})
    assert storage.get_session("s3")["metadata"] == {"a": {"k": 1}, "b": {"k": 1}}
    assert storage.get_session("s2") is None


def test_depth_limit_everywhere(storage):
    limit = tw.MAX_NESTING_DEPTH
    assert limit >= 64
    storage.ensure_session("s")
    for too_deep in [nested(limit + 1), nested(5000)]:
        with pytest.raises(tw.InvalidInputError, match=f"deeper than {limit}"):
            storage.ensure_session("deep", metadata=too_deep)
        with pytest.raises(tw.InvalidInputError, match="deeper"):
            storage.insert_event("s", None, {**dataclasses.asdict(env_event(0)), "system_state_after": too_deep})
        with pytest.raises(tw.InvalidInputError, match="deeper"):
            storage.query("SELECT :p AS p", {"p": too_deep})
    # At the limit, everything reads back equal.
    ok = nested(limit)
    storage.ensure_session("deep", metadata=ok)
    storage.insert_event("deep", None, {**dataclasses.asdict(env_event(0)), "system_state_after": nested(limit - 1)})
    trace = storage.get_session("deep")
    assert trace["metadata"] == ok
    assert trace["event_history"][0]["system_state_after"] == nested(limit - 1)


def test_the_tracer_refuses_deep_and_cyclic_metadata():
    t = tw.SessionTracer.buffered(":memory:")
    d: dict = {}
    d["d"] = d
    with pytest.raises(tw.InvalidInputError, match="cycle"):
        t.start_session("s", d)
    t.start_session("s")
    with pytest.raises(tw.InvalidInputError, match="deeper"):
        t.start_timestep("a", 0, nested(10_000))
    t.end_session()
    t.close()


# --- query parameters ---------------------------------------------------------------------


def test_named_and_positional_params(storage):
    storage.ensure_session("s1", metadata={"k": 1})
    storage.ensure_session("s2")
    storage.flush()
    q = "SELECT session_id FROM session_traces WHERE session_id = {p} ORDER BY session_id"
    for ph, key in [(":sid", "sid"), (":sid", ":sid"), ("@sid", "sid"), ("@sid", "@sid"), ("$sid", "$sid"), ("$sid", "sid")]:
        assert storage.query(q.format(p=ph), {key: "s2"}) == [{"session_id": "s2"}]
    assert storage.query(q.format(p="?"), ("s1",)) == [{"session_id": "s1"}]
    assert storage.query(q.format(p="?"), ["s1"]) == [{"session_id": "s1"}]
    assert storage.query("SELECT COUNT(*) AS n FROM session_traces", None) == [{"n": 2}]
    # Order of first appearance, repeats, literals that look like names.
    rows = storage.query("SELECT :b AS b, ':a' AS lit, :a AS a, :b AS b2", {"a": 1, "b": "two"})
    assert rows == [{"b": "two", "lit": ":a", "a": 1, "b2": "two"}]
    with pytest.raises(tw.InvalidInputError):
        storage.query(q.format(p=":sid"), {})
    # A key that names no parameter is ignored, as the original binding
    # ignored it; the parameters the SQL names still need their values.
    assert storage.query(q.format(p=":sid"), {"sid": "s1", "other": 1}) == [{"session_id": "s1"}]
    with pytest.raises(tw.InvalidInputError):
        storage.query(q.format(p=":sid"), {"other": 1})
    with pytest.raises(TypeError):
        storage.query("SELECT 1", "s1")


def test_named_params_on_the_tracer_and_aquery():
    async def main():
        t = tw.SessionTracer.buffered(":memory:")
        t.start_session("s")
        t.record_event(env_event(0))
        t.end_session()
        sql = "SELECT COUNT(*) AS n FROM events WHERE session_id = @sid"
        assert t.query(sql, {"sid": "s"}) == [{"n": 1}]
        assert await t.aquery(sql, {"@sid": "s"}) == [{"n": 1}]
        assert await t.storage.aquery(sql, {"sid": "nope"}) == [{"n": 0}]
        with pytest.raises(tw.InvalidInputError):
            await t.aquery(sql, {"x": 1})
        await t.aclose()

    asyncio.run(main())


# --- errors are ValueErrors where the original's were --------------------------------------


def test_state_errors_are_value_errors():
    for cls in [
        tw.NoActiveSessionError,
        tw.NoActiveTimestepError,
        tw.SessionAlreadyActiveError,
        tw.InvalidStateError,
        tw.NotInitializedError,
        tw.InvalidInputError,
    ]:
        assert issubclass(cls, ValueError) and issubclass(cls, tw.TraceWriterError), cls
    for cls in [tw.WriterClosedError, tw.QueueFullError, tw.DatabaseError]:
        assert not issubclass(cls, ValueError), cls
    t = tw.SessionTracer.memory()
    caught = []
    for call in [
        lambda: t.record_event(runtime_event(0)),
        lambda: t.end_timestep(),
        lambda: t.end_session(),
    ]:
        try:
            call()
        except ValueError as e:
            caught.append(type(e).__name__)
    t.start_session("s")
    try:
        t.start_session("s2")
    except ValueError as e:
        caught.append(type(e).__name__)
    assert caught == [
        "NoActiveSessionError",
        "NoActiveSessionError",
        "NoActiveSessionError",
        "SessionAlreadyActiveError",
    ]
    t.close()


# --- module functions ---------------------------------------------------------------------


def test_module_functions_match_the_original():
    detect = tw.tracing_detect_provider
    assert detect("gpt-4o-mini") == "openai"
    assert detect("text-davinci-003") == "openai"
    assert detect("Claude-3-Haiku") == "anthropic"
    assert detect("gemini-pro") == "google"
    assert detect("azure-deployment") == "azure"
    assert detect("Meta-Llama-3") == "local"
    assert detect("qwen") == "unknown"
    assert detect("") == "unknown"
    assert detect(None) == "unknown"
    assert detect() == "unknown"
    cost = tw.tracing_calculate_cost
    assert cost("gpt-4", 1000, 1000) == pytest.approx(0.09)
    assert cost("gpt-4-turbo", 1000, 1000) == pytest.approx(0.09)  # gpt-4 is matched first
    assert cost("gpt-3.5-turbo", 2000, 1000) == pytest.approx(0.0025)
    assert cost("claude-3-opus", 1000, 1000) == pytest.approx(0.09)
    assert cost("claude-3-sonnet", 1000, 1000) == pytest.approx(0.018)
    assert cost("claude-3-haiku", 1000, 1000) == pytest.approx(0.0015)
    assert cost("llama", 1000, 1000) is None
    assert cost("", 1, 1) is None
    with pytest.raises(TypeError):
        cost("gpt-4", "many", 1)


# --- dropping a writer --------------------------------------------------------------------


LOCK_HOLDER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
print("released", flush=True)
"""


def test_dropping_a_writer_releases_the_gil_while_it_drains(tmp_path):
    """The last reference to a writer with writes queued goes away without
    close(): the drop waits for the commit, and other Python threads run
    meanwhile. Here the commit can only happen once another Python thread
    has run during the drop: a child process holds the database's write
    lock until that thread tells it to let go. Were the GIL held while
    the drop waits, the thread could not run, the close deadline would
    pass, and the writes would go to a spill file instead of the database."""
    path = tmp_path / "drop.db"
    w = tw.BufferedTraceWriter.file(path, close_timeout=3.0, spill_path=str(tmp_path / "drop.spill.jsonl"))
    w.ensure_session("s")
    w.flush()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for _ in range(50):
            w.insert_event("s", None, dataclasses.asdict(env_event(1)))
        dropping = threading.Event()

        def release_during_the_drop():
            dropping.wait()
            time.sleep(0.3)  # let the main thread enter the drop first
            holder.stdin.write("go\n")
            holder.stdin.flush()

        th = threading.Thread(target=release_during_the_drop)
        th.start()
        dropping.set()
        del w
        gc.collect()
        th.join()
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
    reader = tw.LibsqlTraceStorage.file(path)
    assert reader.query("SELECT COUNT(*) AS n FROM events") == [{"n": 50}]
    reader.close()
    assert not (tmp_path / "drop.spill.jsonl").exists()
