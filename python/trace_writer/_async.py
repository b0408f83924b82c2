"""``AsyncSessionTracer``: the original async wrapper's class, over the
writer.

Code written for the original wrapper moves with one import line. The class
is a thin shell over the native ``SessionTracer``: validation, conversion
(dicts, dataclasses, objects with ``to_dict()``) and the session state are
the native tracer's. Over a ``BufferedTraceWriter``, calls start on the
event loop's thread (a write only queues, in microseconds); a call that has
to wait for the database (reads, and the first step of a session, whose
steps the writer loads) finishes on the module's runtime without blocking
the loop. Over a ``LibsqlTraceStorage``,
every call runs off the loop, as the original did.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from ._trace_writer import BufferedTraceWriter, SessionTracer

__all__ = ["AsyncSessionTracer"]


def _open(url: str, token: str | None) -> BufferedTraceWriter:
    if url == ":memory:":
        return BufferedTraceWriter.memory()
    # ``None`` takes the token from the environment, as the original did.
    return BufferedTraceWriter.open(url, auth_token=token or None)


class AsyncSessionTracer:
    """Records one session at a time, from asyncio code.

    ``storage`` is a ``BufferedTraceWriter`` or a ``LibsqlTraceStorage``
    (shared: many tracers, one per concurrent rollout, may use one storage;
    its owner closes it). Otherwise the tracer opens a ``BufferedTraceWriter``
    of its own, which ``close()`` closes: on ``storage_config.connection_string``
    (with ``storage_config.turso_auth_token``), else on ``db_url``
    (``":memory:"``, a path or a server URL), else in memory.

    ``hooks`` is any object with ``async def trigger(name, **kwargs)``,
    awaited at the original's points: ``session_start``, ``timestep_start``,
    ``timestep_end``, ``event_recorded``, ``message_recorded``,
    ``before_save``, ``after_save`` and ``session_end``.
    """

    def __init__(
        self,
        hooks: Any | None = None,
        db_url: str | None = None,
        auto_save: bool = True,
        storage: Any | None = None,
        storage_config: Any | None = None,
    ) -> None:
        self.hooks = hooks
        owned = storage is None
        if storage is None:
            token = getattr(storage_config, "turso_auth_token", None) if storage_config is not None else None
            conn = getattr(storage_config, "connection_string", None) if storage_config is not None else None
            url = conn or db_url
            storage = _open(url, token) if url else BufferedTraceWriter.memory()
        self._storage = storage
        self._owns_storage = owned
        self._tracer = SessionTracer(storage, auto_save)
        # Writes only queue on a writer: call them on the loop's thread.
        self._direct = isinstance(storage, BufferedTraceWriter)
        self._current_session_id: str | None = None
        self._current_step_id: str | None = None
        # The last trace as a dict, once ``current_session`` has been read;
        # until then the native tracer keeps the session (see there).
        self._last_trace: dict | None = None

    @property
    def storage(self) -> Any:
        """The storage the tracer writes to."""
        return self._storage

    @property
    def session_tracer(self) -> SessionTracer:
        """The native ``SessionTracer`` underneath (synchronous calls)."""
        return self._tracer

    @property
    def current_session(self) -> dict | None:
        """The trace of the last session ended, or ``None``: a dict equal to
        the one ``end_session`` returned, built when first read after it.

        The tracer does not hold on to the dict it returned, so a trace its
        caller drops is freed at once; kept for every tracer, those dicts
        made Python's collector about a third of a rollout's time."""
        if self._last_trace is None:
            self._last_trace = self._tracer.last_trace()
        return self._last_trace

    @property
    def current_step(self) -> str | None:
        """The open timestep's id, or ``None``."""
        return self._current_step_id

    async def _trigger(self, name: str, **kwargs: Any) -> None:
        # The per-call methods test ``self.hooks`` inline instead: without
        # hooks, no coroutine is made for each call.
        if self.hooks is not None:
            await self.hooks.trigger(name, **kwargs)

    async def initialize(self) -> None:
        """Nothing to do: the storage is ready once constructed."""
        return None

    async def start_session(self, session_id: str | None = None, metadata: dict | None = None) -> str:
        """Starts a session; returns its id (``session_id`` or a new UUID)."""
        meta = metadata or {}
        if self._direct:
            sid = self._tracer.start_session(session_id, meta)
        else:
            sid = await asyncio.to_thread(self._tracer.start_session, session_id, meta)
        self._current_session_id = sid
        if self.hooks is not None:
            await self.hooks.trigger("session_start", session_id=sid, metadata=meta)
        return sid

    async def start_timestep(self, step_id: str, turn_number: int | None = None, metadata: dict | None = None) -> str:
        """Starts a timestep (ending the open one); returns ``step_id``."""
        meta = metadata or {}
        if self._direct:
            await self._tracer.astart_timestep(step_id, turn_number, meta)
        else:
            await asyncio.to_thread(self._tracer.start_timestep, step_id, turn_number, meta)
        self._current_step_id = step_id
        if self.hooks is not None:
            await self.hooks.trigger("timestep_start", step=step_id, session_id=self._current_session_id)
        return step_id

    async def end_timestep(self, step_id: str | None = None) -> None:
        """Ends the open timestep."""
        if self._direct:
            await self._tracer.aend_timestep()
        else:
            await asyncio.to_thread(self._tracer.end_timestep)
        if self.hooks is not None:
            await self.hooks.trigger("timestep_end", step=step_id, session_id=self._current_session_id)
        self._current_step_id = None

    async def record_event(self, event: Any) -> int | None:
        """Records an event (a dict, a dataclass or an object with
        ``to_dict()``; untagged events get the kind the original inferred).
        Returns its id, or ``None`` with ``auto_save=False``."""
        if self._direct:
            event_id = self._tracer.record_event(event)
        else:
            event_id = await asyncio.to_thread(self._tracer.record_event, event)
        if self.hooks is not None:
            await self.hooks.trigger("event_recorded", event_obj=event)
        return event_id

    async def record_message(self, message: Any) -> int | None:
        """Records a message; returns its id, or ``None`` with ``auto_save=False``."""
        if self._direct:
            message_id = self._tracer.record_message(message)
        else:
            message_id = await asyncio.to_thread(self._tracer.record_message, message)
        if self.hooks is not None:
            await self.hooks.trigger("message_recorded", message=message)
        return message_id

    async def record_outcome_reward(self, reward: Any) -> int | None:
        """Records the session's outcome reward."""
        if self._direct:
            return self._tracer.record_outcome_reward(reward)
        return await asyncio.to_thread(self._tracer.record_outcome_reward, reward)

    async def record_event_reward(
        self,
        event_id: int,
        reward: Any,
        message_id: int | None = None,
        turn_number: int | None = None,
    ) -> int | None:
        """Records a reward for event ``event_id``."""
        if self._direct:
            return self._tracer.record_event_reward(event_id, reward, message_id, turn_number)
        return await asyncio.to_thread(self._tracer.record_event_reward, event_id, reward, message_id, turn_number)

    async def end_session(self, save: bool | None = None) -> dict:
        """Ends the session and returns its trace; ``save=None`` means save."""
        saving = save is None or save
        if saving and self.hooks is not None:
            await self.hooks.trigger("before_save", session=self.current_session)
        if self._direct:
            trace = await self._tracer.aend_session(saving)
        else:
            trace = await asyncio.to_thread(self._tracer.end_session, saving)
        if saving:
            await self._trigger("after_save", session=trace)
        await self._trigger("session_end", session=trace)
        self._last_trace = None
        self._current_session_id = None
        self._current_step_id = None
        return trace

    async def get_session(self, session_id: str) -> dict | None:
        """The stored trace of ``session_id``, or ``None``."""
        return await self._storage.aget_session(session_id)

    async def query_traces(self, query: str, params: Any = None) -> list[dict]:
        """Runs SQL; ``params`` is ``None``, a list or tuple, or a dict of
        named parameters."""
        return await self._storage.aquery(query, params or None)

    async def get_session_history(self, limit: int | None = None) -> list[dict]:
        """The stored sessions' rows, newest first."""
        sql = "SELECT * FROM session_traces ORDER BY created_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return await self.query_traces(sql)

    async def delete_session(self, session_id: str) -> bool:
        """Deletes a stored session; returns whether it existed."""
        return await self._storage.adelete_session(session_id)

    async def close(self) -> None:
        """Closes the storage if the tracer opened it (a writer commits what
        it queued first); a storage passed in is left to its owner."""
        if self._owns_storage:
            await self._storage.aclose()

    async def __aenter__(self) -> "AsyncSessionTracer":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    @asynccontextmanager
    async def session(
        self,
        session_id: str | None = None,
        metadata: dict | None = None,
        save: bool | None = None,
    ) -> AsyncIterator[str]:
        """``async with tracer.session() as sid:``: ends the session on exit."""
        sid = await self.start_session(session_id, metadata)
        try:
            yield sid
        finally:
            await self.end_session(save=save)

    @asynccontextmanager
    async def timestep(
        self,
        step_id: str,
        turn_number: int | None = None,
        metadata: dict | None = None,
    ) -> AsyncIterator[str]:
        """``async with tracer.timestep(step_id):``: ends the step on exit."""
        step = await self.start_timestep(step_id, turn_number, metadata)
        try:
            yield step
        finally:
            await self.end_timestep(step_id)
