"""The original client's shapes, written for these tests: dataclasses with
the original's field names and defaults, and a wrapper that calls the
binding the way the original async wrapper did (``asyncio.to_thread``
around every call, ``dataclasses.asdict`` of every payload, query
parameters as a dict)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import trace_writer as tw


@dataclass
class TimeRecord:
    event_time: float
    message_time: int | None = None


@dataclass(frozen=True)
class SessionMessageContent:
    text: str | None = None
    json_payload: str | None = None


@dataclass
class SessionEventMarkovBlanketMessage:
    content: SessionMessageContent
    message_type: str
    time_record: TimeRecord
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaseEvent:
    system_instance_id: str
    time_record: TimeRecord
    metadata: dict[str, Any] = field(default_factory=dict)
    event_metadata: list[Any] | None = None


@dataclass
class RuntimeEvent(BaseEvent):
    actions: list[int] = field(default_factory=list)


@dataclass
class EnvironmentEvent(BaseEvent):
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    system_state_before: dict[str, Any] | None = None
    system_state_after: dict[str, Any] | None = None


@dataclass
class LLMUsage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None


@dataclass
class LLMContentPart:
    type: str
    text: str | None = None
    data: dict[str, Any] | None = None
    mime_type: str | None = None


@dataclass
class LLMMessage:
    role: str
    parts: list[LLMContentPart] = field(default_factory=list)
    name: str | None = None
    tool_call_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LLMCallRecord:
    call_id: str
    api_type: str
    provider: str | None = None
    model_name: str = ""
    schema_version: str = "1.0"
    started_at: datetime | None = None
    completed_at: datetime | None = None
    latency_ms: int | None = None
    input_messages: list[LLMMessage] = field(default_factory=list)
    output_messages: list[LLMMessage] = field(default_factory=list)
    usage: LLMUsage | None = None
    finish_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LMCAISEvent(BaseEvent):
    model_name: str = ""
    provider: str | None = None
    api_format: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: int | None = None
    span_id: str | None = None
    trace_id: str | None = None
    system_state_before: dict[str, Any] | None = None
    system_state_after: dict[str, Any] | None = None
    call_records: list[LLMCallRecord] = field(default_factory=list)


@dataclass
class OutcomeReward:
    total_reward: float
    objective_key: str = "reward"
    achievements_count: int = 0
    total_steps: int = 0
    reward_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventReward:
    reward_value: float
    objective_key: str = "reward"
    reward_type: str | None = None
    key: str | None = None
    source: str | None = None


def llm_event(step: int) -> LMCAISEvent:
    return LMCAISEvent(
        system_instance_id="agent",
        time_record=TimeRecord(event_time=1_700_000_000.0 + step, message_time=step),
        metadata={"step": step},
        model_name="gpt-4o-mini",
        provider="openai",
        api_format="chat",
        input_tokens=120,
        output_tokens=12,
        total_tokens=132,
        cost_usd=0.0001,
        latency_ms=250,
        call_records=[
            LLMCallRecord(
                call_id=f"call-{step}",
                api_type="chat_completions",
                provider="openai",
                model_name="gpt-4o-mini",
                started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                input_messages=[LLMMessage("user", [LLMContentPart("text", "what next?")])],
                output_messages=[LLMMessage("assistant", [LLMContentPart("text", "move east")])],
                usage=LLMUsage(120, 12, 132),
                finish_reason="stop",
            )
        ],
    )


def env_event(step: int, terminated: bool = False) -> EnvironmentEvent:
    return EnvironmentEvent(
        system_instance_id="crafter",
        time_record=TimeRecord(event_time=1_700_000_000.5 + step),
        reward=0.5 * step,
        terminated=terminated,
        system_state_after={"health": 9 - step},
    )


def runtime_event(step: int) -> RuntimeEvent:
    return RuntimeEvent(
        system_instance_id="runtime",
        time_record=TimeRecord(event_time=1_700_000_000.7 + step),
        actions=[step, step + 1],
    )


def message(step: int) -> SessionEventMarkovBlanketMessage:
    return SessionEventMarkovBlanketMessage(
        content=SessionMessageContent(text=f"observation {step}"),
        message_type="observation",
        time_record=TimeRecord(event_time=1_700_000_000.9 + step),
        metadata={"step": step},
    )


def _payload(value: Any) -> Any:
    """What the original wrapper handed the binding: ``to_dict()`` if the
    object has one, else ``asdict`` of a dataclass, else the value."""
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return value


class ThreadHopTracer:
    """The original wrapper's calling pattern over a native SessionTracer:
    every call in ``asyncio.to_thread``, every payload through ``asdict``,
    query parameters as given (a dict)."""

    def __init__(self, storage, auto_save: bool = True):
        self._tracer = tw.SessionTracer(storage, auto_save)

    async def start_session(self, session_id=None, metadata=None):
        return await asyncio.to_thread(self._tracer.start_session, session_id, metadata or {})

    async def start_timestep(self, step_id, turn_number=None, metadata=None):
        await asyncio.to_thread(self._tracer.start_timestep, step_id, turn_number, metadata or {})
        return step_id

    async def end_timestep(self, step_id=None):
        await asyncio.to_thread(self._tracer.end_timestep)

    async def record_event(self, event):
        return await asyncio.to_thread(self._tracer.record_event, _payload(event))

    async def record_message(self, message):
        return await asyncio.to_thread(self._tracer.record_message, _payload(message))

    async def record_outcome_reward(self, reward):
        return await asyncio.to_thread(self._tracer.record_outcome_reward, _payload(reward))

    async def record_event_reward(self, event_id, reward, message_id=None, turn_number=None):
        return await asyncio.to_thread(
            self._tracer.record_event_reward, event_id, _payload(reward), message_id, turn_number
        )

    async def end_session(self, save=None):
        return await asyncio.to_thread(self._tracer.end_session, save if save is not None else True)

    async def get_session(self, session_id):
        return await asyncio.to_thread(self._tracer.get_session, session_id)

    async def query_traces(self, query, params=None):
        return await asyncio.to_thread(self._tracer.query, query, params or None)
