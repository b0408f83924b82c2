"""SessionTracer over both backends: the same flow gives the same rows."""

import pytest

import trace_writer as tw
from conftest import env_event, llm_event, runtime_event

TIME_KEYS = {"created_at", "timestamp", "completed_at", "started_at", "event_time"}


def strip_times(value):
    """The value without the wall-clock times a run sets (now())."""
    if isinstance(value, dict):
        return {k: strip_times(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [strip_times(v) for v in value]
    return value


def run_flow(tracer):
    """A rollout with two steps, messages, rewards and an event outside steps;
    returns the ids and the trace that end_session gave."""
    ids = []
    sid = tracer.start_session("rollout-1", metadata={"env": "crafter"})
    assert sid == "rollout-1" and tracer.session_id == "rollout-1"
    tracer.start_timestep("step-0", turn_number=0, metadata={"k": 1})
    ids.append(tracer.record_event(llm_event(1, 0)))
    ids.append(tracer.record_message({"content": {"text": "look"}, "message_type": "user",
                                      "time_record": {"event_time": 5.0}}))
    ids.append(tracer.record_event(env_event(0)))
    ids.append(tracer.record_event_reward(ids[2] or 3, {"reward_value": 0.5, "reward_type": "shaped"}))
    tracer.start_timestep("step-1", turn_number=1)  # ends step-0
    ids.append(tracer.record_event(runtime_event(1)))
    ids.append(tracer.record_event_reward(ids[4] or 4, {"reward_value": 1.0}, message_id=ids[1] or 1, turn_number=9))
    tracer.end_timestep()
    ids.append(tracer.record_event(runtime_event(2)))  # outside any step
    ids.append(tracer.record_event_reward(ids[6] or 5, {"reward_value": 2.0}))
    ids.append(tracer.record_outcome_reward({"total_reward": 1.5, "total_steps": 2}))
    trace = tracer.end_session()
    assert tracer.session_id is None
    return ids, trace


DUMP = [
    "SELECT session_id, num_timesteps, num_events, num_messages, metadata FROM session_traces",
    "SELECT id, session_id, step_id, step_index, turn_number, step_metadata, completed_at IS NOT NULL AS done FROM session_timesteps ORDER BY id",
    "SELECT id, timestep_id, event_type, system_instance_id, model_name, reward, call_records FROM events ORDER BY id",
    "SELECT id, timestep_id, message_type, content, event_time FROM messages ORDER BY id",
    "SELECT id, event_id, message_id, turn_number, reward_value, reward_type FROM event_rewards ORDER BY id",
    "SELECT id, objective_key, total_reward, total_steps FROM outcome_rewards ORDER BY id",
]


def dump(tracer):
    return [tracer.query(sql) for sql in DUMP]


@pytest.mark.parametrize("auto_save", [True, False])
def test_flow_gives_equal_results_on_both_backends(tmp_path, auto_save):
    results = []
    for tracer in (
        tw.SessionTracer(tw.LibsqlTraceStorage.file(tmp_path / "plain.db"), auto_save=auto_save),
        tw.SessionTracer.buffered(tmp_path / "writer.db", auto_save=auto_save),
    ):
        with tracer:
            ids, trace = run_flow(tracer)
            tracer.flush()
            back = tracer.get_session("rollout-1")
            assert back == trace
            results.append((ids, strip_times(trace), dump(tracer)))
    assert results[0] == results[1]
    ids, trace, rows = results[0]
    if auto_save:
        assert ids == [1, 1, 2, 1, 3, 2, 4, 3, 1]
    else:
        assert ids == [None] * 9
    assert rows[0][0]["num_events"] == 4 and rows[0][0]["num_timesteps"] == 2
    assert [r["turn_number"] for r in rows[4]] == [0, 9, None]
    assert [r["message_id"] for r in rows[4]] == [None, 1, None]
    assert len(trace["event_history"]) == 4
    assert [len(s["events"]) for s in trace["session_time_steps"]] == [2, 1]


def test_end_session_histories_share_the_steps_dicts():
    tracer = tw.SessionTracer.memory()
    ids, trace = run_flow(tracer)
    steps = trace["session_time_steps"]
    history = trace["event_history"]
    assert history[0] is steps[0]["events"][0] and history[2] is steps[1]["events"][0]
    assert history[3]["actions"] == [2] and all(history[3] is not e for s in steps for e in s["events"])
    assert trace["markov_blanket_message_history"][0] is steps[0]["markov_blanket_messages"][0]
    tracer.close()


@pytest.mark.parametrize("buffered", [False, True])
def test_last_trace_builds_the_last_ended_trace_again(buffered):
    tracer = tw.SessionTracer.buffered(":memory:") if buffered else tw.SessionTracer.memory()
    assert tracer.last_trace() is None
    ids, trace = run_flow(tracer)
    again = tracer.last_trace()
    assert again == trace and again is not trace and tracer.last_trace() is not again
    # Its histories share the steps' dicts, as end_session's do.
    assert again["event_history"][0] is again["session_time_steps"][0]["events"][0]
    tracer.start_session("second")
    assert tracer.last_trace() == trace  # still the last one ended
    tracer.end_session(save=False)
    assert tracer.last_trace()["session_id"] == "second"
    tracer.close()


def test_end_session_without_save_under_auto_save_false_writes_nothing():
    tracer = tw.SessionTracer.memory(auto_save=False)
    tracer.start_session("s")
    assert tracer.record_event(runtime_event(1)) is None
    trace = tracer.end_session(save=False)
    assert len(trace["event_history"]) == 1
    assert tracer.get_session("s") is None
    tracer.close()


def test_tracer_constructors_and_storage(tmp_path):
    plain = tw.LibsqlTraceStorage.memory()
    t = tw.SessionTracer(plain)
    assert t.storage is plain and t.auto_save
    assert isinstance(tw.SessionTracer.memory().storage, tw.LibsqlTraceStorage)
    assert isinstance(tw.SessionTracer.file(tmp_path / "a.db").storage, tw.LibsqlTraceStorage)
    assert isinstance(tw.SessionTracer.buffered(tmp_path / "b.db", linger=0.002).storage, tw.BufferedTraceWriter)
    assert isinstance(tw.SessionTracer.buffered(":memory:").storage, tw.TraceStorage)
    with pytest.raises(TypeError):
        tw.SessionTracer("traces.db")
    t.flush()  # a no-op on the plain backend
    t.close()


def test_context_helpers(cls):
    with tw.SessionTracer(cls.memory()) as tracer:
        with tracer.session(metadata={"a": 1}) as sid:
            assert tracer.session_id == sid
            with tracer.timestep("s0", turn_number=3):
                eid = tracer.record_event(env_event(0))
                tracer.record_event_reward(eid, {"reward_value": 1.0})
            with tracer.timestep("s1"):
                tracer.end_timestep()  # ended inside: the exit leaves it alone
            with tracer.timestep("s2"):
                tracer.start_timestep("s3")  # ends s2; s2's exit leaves s3 open
            assert tracer.session_id == sid
        assert tracer.session_id is None
        back = tracer.get_session(sid)
        assert [s["step_id"] for s in back["session_time_steps"]] == ["s0", "s1", "s2", "s3"]
        assert all(s["completed_at"] for s in back["session_time_steps"])
        assert tracer.query("SELECT turn_number FROM event_rewards") == [{"turn_number": 3}]
        assert tracer.query("SELECT num_timesteps FROM session_traces") == [{"num_timesteps": 4}]


def test_session_helper_ends_the_session_on_an_exception(cls):
    with tw.SessionTracer(cls.memory()) as tracer:
        with pytest.raises(KeyError):
            with tracer.session("s"):
                tracer.record_event(runtime_event(0))
                raise KeyError("boom")
        assert tracer.session_id is None
        assert tracer.get_session("s")["event_history"][0]["actions"] == [0]


def test_tracer_state_errors(cls):
    tracer = tw.SessionTracer(cls.memory())
    with pytest.raises(tw.NoActiveSessionError):
        tracer.record_event(runtime_event(0))
    with pytest.raises(tw.NoActiveSessionError):
        tracer.end_session()
    tracer.start_session("s")
    with pytest.raises(tw.SessionAlreadyActiveError, match="s"):
        tracer.start_session("t")
    with pytest.raises(tw.NoActiveTimestepError):
        tracer.end_timestep()
    tracer.end_session()
    tracer.close()
