"""Malformed dicts and bad options: the right class, the field named,
nothing queued and no id used up."""

import pytest

import trace_writer as tw
from conftest import env_event, llm_event, runtime_event


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.pop("model_name"), "model_name"),
        (lambda e: e.update(event_type="bogus"), "event_type"),
        # Untagged, and no field marks a kind: nothing to infer it from.
        (lambda e: [e.pop(k) for k in ("event_type", "model_name", "call_records", "input_tokens", "output_tokens")], "event_type"),
        (lambda e: e.update(input_tokens="many"), "input_tokens"),
        (lambda e: e["time_record"].update(event_time="soon"), "time_record"),
        (lambda e: e["call_records"][0].pop("call_id"), "call_records[0]"),
        (lambda e: e["call_records"][0]["usage"].update(input_tokens=[1]), "call_records[0].usage.input_tokens"),
        (lambda e: e["call_records"][0].update(started_at="yesterday"), "call_records[0].started_at"),
    ],
)
def test_bad_event_names_the_field_and_queues_nothing(storage, mutate, field):
    storage.ensure_session("s")
    bad = llm_event(0, 0)
    mutate(bad)
    with pytest.raises(tw.InvalidInputError) as info:
        storage.insert_event("s", None, bad)
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)
    # No id was used up: the next event gets id 1.
    assert storage.insert_event("s", None, runtime_event(0)) == 1
    storage.flush()
    assert storage.query("SELECT COUNT(*) AS n FROM events") == [{"n": 1}]


@pytest.mark.parametrize(
    "method, args, field",
    [
        ("insert_message", ("s", None, {"content": {"text": "x"}}), "message_type"),
        ("insert_message", ("s", None, {"content": "x", "message_type": "user"}), "content"),
        ("insert_outcome_reward", ("s", {"objective_key": "r"}), "total_reward"),
        ("insert_outcome_reward", ("s", {"total_reward": "high"}), "total_reward"),
        ("insert_event_reward", ("s", 1, None, None, {"reward_value": None}), "reward_value"),
        ("ensure_timestep", ("s", {"step_id": "a", "step_index": 0}), "timestamp"),
        ("ensure_timestep", ("s", {"step_id": "a", "step_index": 0, "timestamp": "now"}), "timestamp"),
    ],
)
def test_bad_dicts_everywhere(storage, method, args, field):
    storage.ensure_session("s")
    with pytest.raises(tw.InvalidInputError, match=field.replace("[", r"\[")):
        getattr(storage, method)(*args)


def test_wrong_types_raise_type_error(storage):
    with pytest.raises(TypeError):
        storage.insert_event("s", None, ["not", "a", "dict"])
    with pytest.raises(TypeError):
        storage.ensure_session("s", 12345)
    with pytest.raises(TypeError):
        storage.query("SELECT 1", "not a list")
    with pytest.raises(tw.InvalidInputError):
        storage.ensure_session("s", "not a time")


def test_tracer_bad_dicts_leave_the_trace_alone():
    t = tw.SessionTracer.buffered(":memory:")
    t.start_session("s")
    with pytest.raises(tw.InvalidInputError, match="reward"):
        t.record_event({**env_event(0), "reward": "lots"})
    assert t.record_event(env_event(0)) == 1
    assert len(t.end_session()["event_history"]) == 1
    t.close()


@pytest.mark.parametrize("cls", [tw.LibsqlTraceStorage, tw.BufferedTraceWriter])
@pytest.mark.parametrize(
    "opts, exc",
    [
        ({"journal_mode": "truncate"}, ValueError),
        ({"synchronous": "extra"}, ValueError),
        ({"busy_timeout": -1}, ValueError),
        ({"busy_timeout": float("nan")}, ValueError),
        ({"no_such_option": 1}, ValueError),
        ({"journal_mode": 1}, TypeError),
        ({"busy_timeout": "5"}, TypeError),
        ({"busy_timeout": True}, TypeError),
    ],
)
def test_bad_storage_options(cls, opts, exc):
    with pytest.raises(exc):
        cls.memory(**opts)


@pytest.mark.parametrize(
    "opts, exc",
    [
        ({"max_batch_ops": 0}, ValueError),
        ({"queue_capacity": -5}, ValueError),
        ({"queue_capacity_bytes": 100, "max_op_bytes": 1000}, ValueError),
        ({"overflow": "drop"}, ValueError),
        ({"linger": -0.1}, ValueError),
        ({"max_batch_ops": 1.5}, TypeError),
        ({"overflow": None, "linger": "1ms"}, TypeError),
        ({"enqueue_timeout": [1]}, TypeError),
        ({"provisional_step_ids": "yes"}, TypeError),
        ({"provisional_step_ids": 1}, TypeError),
    ],
)
def test_bad_writer_options(opts, exc):
    with pytest.raises(exc):
        tw.BufferedTraceWriter.memory(**opts)


@pytest.mark.parametrize("key", ["max_batch_ops", "linger", "overflow", "queue_capacity"])
def test_writer_options_on_the_plain_backend_are_value_errors(key):
    value = {"max_batch_ops": 10, "linger": 0.01, "overflow": "reject", "queue_capacity": 10}[key]
    with pytest.raises(ValueError, match="BufferedTraceWriter"):
        tw.LibsqlTraceStorage.memory(**{key: value})
    with pytest.raises(ValueError, match="BufferedTraceWriter"):
        tw.SessionTracer.memory(**{key: value})


def test_good_options_are_taken(tmp_path):
    w = tw.BufferedTraceWriter.file(
        tmp_path / "t.db", journal_mode="delete", synchronous="full", busy_timeout=2,
        max_batch_ops=10, queue_capacity=100, queue_capacity_bytes=1 << 20, max_op_bytes=1 << 16,
        linger=0.001, close_timeout=5, flush_timeout=5.0, enqueue_timeout=1, overflow="reject",
    )
    assert w.query("PRAGMA journal_mode") == [{"journal_mode": "delete"}]
    with pytest.raises(tw.InvalidInputError, match="max_op_bytes"):
        w.ensure_session("s", metadata={"big": "x" * (1 << 17)})
    w.close()
    s = tw.LibsqlTraceStorage.file(tmp_path / "p.db", journal_mode="wal", synchronous="off")
    assert s.query("PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    s.close()


def test_open_and_from_env(tmp_path, monkeypatch):
    for cls in (tw.LibsqlTraceStorage, tw.BufferedTraceWriter):
        s = cls.open(":memory:")
        s.close()
        s = cls.open(f"file:{tmp_path}/o.db")
        s.ensure_session("x")
        s.close()
        monkeypatch.setenv("SYNTH_TRACES_DB", str(tmp_path / "env.db"))
        s = cls.from_env()
        s.ensure_session("y")
        s.close()
        with pytest.raises(tw.InvalidInputError, match="scheme"):
            cls.open("postgres://db")
    assert (tmp_path / "env.db").exists()


def test_provisional_step_ids_file_records_under_a_step_stored_elsewhere(tmp_path):
    db = tmp_path / "prov.db"
    plain = tw.LibsqlTraceStorage.file(db)
    plain.ensure_session("s")
    step = {"step_id": "a", "step_index": 0, "timestamp": "2025-01-02T03:04:06Z"}
    real = plain.ensure_timestep("s", step)
    w = tw.BufferedTraceWriter.file(db, provisional_step_ids=True)
    w.ensure_session("s")
    ours = w.ensure_timestep("s", step)
    assert ours != real  # answered without reading the session
    w.insert_event("s", ours, env_event(1))
    w.flush()
    rows = plain.query("SELECT timestep_id FROM events")
    assert rows == [{"timestep_id": real}]
    assert plain.query("SELECT COUNT(*) AS n FROM session_timesteps") == [{"n": 1}]
    w.close()
    plain.close()
