"""Dicts in, dicts out: what is written reads back equal, on both classes."""

import datetime as dt

import pytest

import trace_writer as tw
from conftest import env_event, expected_trace, fixture_trace, llm_event, runtime_event, write_trace
from original_shapes import LLMCallRecord, LLMContentPart, LLMMessage, LMCAISEvent, TimeRecord


def test_fixture_trace_round_trips(storage):
    trace = fixture_trace()
    write_trace(storage, trace)
    storage.flush()
    back = storage.get_session(trace["session_id"])
    assert back == expected_trace(trace)
    # The canonical form fills defaults, the stored one keeps what was given.
    ev = back["session_time_steps"][0]["events"][0]
    assert ev["call_records"][0]["usage"]["reasoning_tokens"] == 3
    assert ev["cost_usd"] == 0.0001
    assert back["created_at"] == "2025-01-02T03:04:05.123456789Z"


def test_realistic_trace_round_trips_with_events_outside_steps(storage):
    trace = {
        "session_id": "rollout-1",
        "created_at": "2025-01-02T03:04:05Z",
        "metadata": {"env": "crafter", "seed": 7, "nested": {"a": [1, 2.5, None, True]}},
        "session_time_steps": [
            {
                "step_id": f"step-{i}",
                "step_index": i,
                "timestamp": "2025-01-02T03:04:06Z",
                "turn_number": i,
                "step_metadata": {"i": i},
                "events": [llm_event(1, i), env_event(i), runtime_event(i)],
                "markov_blanket_messages": [
                    {
                        "content": {"text": f"observation {i}"},
                        "message_type": "user",
                        "time_record": {"event_time": 1.5 + i, "message_time": i},
                    },
                    {
                        "content": {"json_payload": '{"action": 3}'},
                        "message_type": "assistant",
                        "time_record": {"event_time": 2.5 + i},
                        "metadata": {"k": "v"},
                    },
                ],
                "completed_at": "2025-01-02T03:04:07Z",
            }
            for i in range(3)
        ],
        "event_history": [runtime_event(99)],
        "markov_blanket_message_history": [
            {"content": {"text": "bye"}, "message_type": "system", "time_record": {"event_time": 9.0}}
        ],
    }
    ids = write_trace(storage, trace)
    assert ids == list(range(1, 11))
    assert storage.get_session("rollout-1") == expected_trace(trace)
    assert storage.get_session("nope") is None


class Tag(str):
    """A str subclass: CPython keeps its text apart from the object."""


# ASCII (read in place), then text that goes through the interpreter: one,
# two and four bytes a character, a NUL, and a subclass.
TEXTS = ["", "ascii only", "\x7f", "café", "naïve – “quoted”", "ключ", "日本語", "dice 🎲, 𝔘", "nul\x00in", Tag("sub")]


def test_text_of_every_kind_reads_back_as_written(storage):
    storage.ensure_session("s")
    ts = storage.ensure_timestep("s", {"step_id": "a", "step_index": 0, "timestamp": "2025-01-02T03:04:05Z"})
    for i, text in enumerate(TEXTS):
        ev = llm_event(0, i)
        ev["model_name"] = text
        ev["metadata"] = {text: text, "list": [text]}
        ev["call_records"][0]["input_messages"][0]["parts"][0]["text"] = text
        storage.insert_event("s", ts, ev)
        part = LLMContentPart(type="text", text=text)
        record = LLMCallRecord(call_id=text, api_type="chat", input_messages=[LLMMessage(role=text, parts=[part])])
        dc = LMCAISEvent(text, TimeRecord(1.0), metadata={text: text}, model_name=text, call_records=[record])
        storage.insert_event("s", ts, dc)
    # Keys that are str subclasses, with the field names as their text.
    storage.insert_event("s", ts, {Tag(k): v for k, v in llm_event(0, 99).items()})
    storage.flush()
    events = storage.get_session("s")["session_time_steps"][0]["events"]
    assert len(events) == 2 * len(TEXTS) + 1
    for i, text in enumerate(TEXTS):
        d, c = events[2 * i], events[2 * i + 1]
        assert d["model_name"] == text
        assert d["metadata"] == {text: text, "list": [text]}
        assert d["call_records"][0]["input_messages"][0]["parts"][0]["text"] == text
        assert (c["system_instance_id"], c["model_name"], c["metadata"]) == (text, text, {text: text})
        call = c["call_records"][0]
        assert (call["call_id"], call["input_messages"][0]["role"]) == (text, text)
        assert call["input_messages"][0]["parts"][0]["text"] == text
    last, want = events[-1], llm_event(0, 99)
    assert (last["model_name"], last["span_id"], last["metadata"]) == ("gpt-4o-mini", want["span_id"], want["metadata"])
    assert last["call_records"][0]["call_id"] == want["call_records"][0]["call_id"]


def test_datetimes_are_accepted_where_times_go(storage):
    naive = dt.datetime(2025, 1, 2, 3, 4, 5, 123456)
    aware = dt.datetime(2025, 1, 2, 5, 4, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    storage.ensure_session("s", naive, {"when": naive})
    ts = storage.ensure_timestep("s", {"step_id": "a", "step_index": 0, "timestamp": aware})
    ev = llm_event(0, 0)
    ev["call_records"][0]["started_at"] = naive
    ev["time_record"]["event_time"] = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)
    storage.insert_event("s", ts, ev)
    storage.update_timestep("s", "a", aware)
    back = storage.get_session("s")
    assert back["created_at"] == "2025-01-02T03:04:05.123456Z"
    assert back["metadata"] == {"when": "2025-01-02T03:04:05.123456Z"}
    step = back["session_time_steps"][0]
    assert step["timestamp"] == "2025-01-02T03:04:06Z"
    assert step["completed_at"] == "2025-01-02T03:04:06Z"
    e = step["events"][0]
    assert e["call_records"][0]["started_at"] == "2025-01-02T03:04:05.123456Z"
    assert e["time_record"]["event_time"] == dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc).timestamp()


def test_rewards_and_query(storage):
    storage.ensure_session("s")
    ts = storage.ensure_timestep("s", {"step_id": "a", "step_index": 0, "timestamp": "2025-01-02T03:04:06Z"})
    assert storage.ensure_timestep("s", {"step_id": "a", "step_index": 0, "timestamp": "2025-01-02T03:04:06Z"}) == ts
    eid = storage.insert_event("s", ts, env_event(1))
    mid = storage.insert_message("s", ts, {"content": {"text": "hi"}, "message_type": "user"})
    assert storage.insert_outcome_reward("s", {"total_reward": 2.5, "achievements_count": 3}) == 1
    assert storage.insert_event_reward("s", eid, mid, 4, {"reward_value": 1.0, "reward_type": "sparse"}) == 1
    storage.update_session_counts("s")
    rows = storage.query("SELECT num_timesteps, num_events, num_messages FROM session_traces WHERE session_id = ?", ["s"])
    assert rows == [{"num_timesteps": 1, "num_events": 1, "num_messages": 1}]
    rows = storage.query("SELECT objective_key, total_reward, achievements_count FROM outcome_rewards")
    assert rows == [{"objective_key": "reward", "total_reward": 2.5, "achievements_count": 3}]
    rows = storage.query(
        "SELECT event_id, message_id, turn_number, reward_value, reward_type FROM event_rewards WHERE session_id = ?",
        ("s",),
    )
    assert rows == [{"event_id": eid, "message_id": mid, "turn_number": 4, "reward_value": 1.0, "reward_type": "sparse"}]
    assert storage.delete_session("s") is True
    assert storage.delete_session("s") is False
    assert storage.get_session("s") is None


def test_canonical_helpers():
    e = tw.canonical_event(runtime_event(1))
    assert e["metadata"] == {} and e["event_metadata"] is None
    with pytest.raises(tw.InvalidInputError):
        tw.canonical_trace({"session_id": "x"})


def contains(big, small, path="") -> None:
    """Every key and value of `small` is in `big` (defaults may be added)."""
    if isinstance(small, dict):
        assert isinstance(big, dict), path
        for k, v in small.items():
            assert k in big, f"{path}.{k}"
            contains(big[k], v, f"{path}.{k}")
    elif isinstance(small, list):
        assert isinstance(big, list) and len(big) == len(small), path
        for i, (b, s) in enumerate(zip(big, small)):
            contains(b, s, f"{path}[{i}]")
    elif isinstance(small, str) and small.endswith("Z") and "T" in small:
        assert big.rstrip("Z").rstrip("0").rstrip(".") == small.rstrip("Z").rstrip("0").rstrip("."), path
    else:
        assert big == small and type(big) is type(small), path


def test_conversion_keeps_every_value_and_type():
    import json

    trace = fixture_trace()
    out = tw.canonical_trace(trace)
    contains(out, trace)
    assert json.loads(json.dumps(out)) == out  # plain JSON types only
    assert tw.canonical_trace(out) == out
    ev = llm_event(3, 4)
    contains(tw.canonical_event(ev), ev)
