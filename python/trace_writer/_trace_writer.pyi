"""Type stubs of the native module ``trace_writer._trace_writer``.

Dicts follow the crate's serde JSON shape (see the README). Times are
``datetime`` objects (naive means UTC) or RFC 3339 strings on the way in,
and RFC 3339 strings on the way out.
"""

import builtins
import datetime
import os
from types import TracebackType
from typing import Any, final, Dict, List, Literal, Mapping, Optional, Sequence, Type, TypeVar, Union

__version__: str

_Json = Any
"""A JSON-able value: dict, list, str, int, float, bool or None."""
_Time = Union[datetime.datetime, str]
"""A ``datetime`` (naive means UTC) or an RFC 3339 string."""
_StrPath = Union[str, "os.PathLike[str]"]
_Payload = Any
"""A ``dict`` (or other mapping), a dataclass instance (walked field by
field, as ``dataclasses.asdict`` would), or an object with ``to_dict()``."""
_Event = _Payload
"""An event payload tagged by ``"event_type"`` (``"cais"``, ``"environment"``
or ``"runtime"``), or untagged: then ``cais`` if it has ``model_name``,
``call_records``, ``input_tokens`` or ``output_tokens``, else
``environment`` if it has ``reward``, ``terminated`` or ``truncated``, else
``runtime`` if it has ``actions`` (the original binding's rules)."""
_Params = Union[None, Sequence[_Json], Mapping[str, _Json]]
"""Query parameters: a list or tuple (positional ``?``), or a dict (named
``:name``, ``@name`` or ``$name``; keys with or without the prefix)."""

MAX_NESTING_DEPTH: int
"""How deep a value may nest (the payload is level 1); deeper values and
values that contain themselves raise ``InvalidInputError``."""
_Trace = Dict[str, Any]
"""A ``SessionTrace`` dict."""

_JournalMode = Literal["wal", "delete"]
_SynchronousMode = Literal["off", "normal", "full"]
_Overflow = Literal["block", "reject"]

_S = TypeVar("_S", bound="TraceStorage")
_T = TypeVar("_T", bound="SessionTracer")

class TraceWriterError(Exception):
    """Base class of every error raised by trace_writer."""

class DatabaseError(TraceWriterError): ...
class NoActiveSessionError(TraceWriterError, ValueError): ...
class NoActiveTimestepError(TraceWriterError, ValueError): ...
class SessionAlreadyActiveError(TraceWriterError, ValueError): ...
class InvalidStateError(TraceWriterError, ValueError): ...
class SerializationError(TraceWriterError): ...
class NotInitializedError(TraceWriterError, ValueError): ...
class InternalError(TraceWriterError): ...
class WriterClosedError(TraceWriterError): ...
class QueueFullError(TraceWriterError): ...
class InvalidInputError(TraceWriterError, ValueError): ...

class WriteFailedError(TraceWriterError):
    count: int
    first_cause: str

class TimeoutError(TraceWriterError, builtins.TimeoutError): ...

class SpilledError(TraceWriterError):
    path: str
    count: int

class CloseFailedError(TraceWriterError):
    count: int
    cause: str

class HaltedError(TraceWriterError):
    """An error no retry can fix halted the writer; the rest is in the spill file at ``path``."""

    cause: str
    path: str
    count: int

class TraceStorage:
    """The methods both storage classes share (the crate's TraceStorage trait)."""

    def ensure_session(
        self,
        session_id: str,
        created_at: Optional[_Time] = None,
        metadata: Optional[_Payload] = None,
    ) -> None: ...
    def ensure_timestep(self, session_id: str, step: _Payload) -> int: ...
    def update_timestep(self, session_id: str, step_id: str, completed_at: Optional[_Time] = None) -> None: ...
    def insert_event(self, session_id: str, timestep_id: Optional[int], event: _Event) -> int: ...
    def insert_message(self, session_id: str, timestep_id: Optional[int], message: _Payload) -> int: ...
    def insert_outcome_reward(self, session_id: str, reward: _Payload) -> int: ...
    def insert_event_reward(
        self,
        session_id: str,
        event_id: int,
        message_id: Optional[int],
        turn_number: Optional[int],
        reward: _Payload,
    ) -> int: ...
    def update_session_counts(self, session_id: str) -> None: ...
    def get_session(self, session_id: str) -> Optional[_Trace]: ...
    def query(self, sql: str, params: _Params = None) -> List[Dict[str, _Json]]: ...
    def delete_session(self, session_id: str) -> bool: ...
    def flush(self, timeout: Optional[float] = None) -> None: ...
    def close(self) -> None: ...
    async def aflush(self, timeout: Optional[float] = None) -> None: ...
    async def aclose(self) -> None: ...
    async def aget_session(self, session_id: str) -> Optional[_Trace]: ...
    async def aquery(self, sql: str, params: _Params = None) -> List[Dict[str, _Json]]: ...
    async def adelete_session(self, session_id: str) -> bool: ...
    def __enter__(self: _S) -> _S: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    async def __aenter__(self: _S) -> _S: ...
    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class LibsqlTraceStorage(TraceStorage):
    """The plain backend: one statement per call, as the original module ran."""

    @staticmethod
    def memory(
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
    ) -> "LibsqlTraceStorage": ...
    @staticmethod
    def file(
        path: _StrPath,
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
    ) -> "LibsqlTraceStorage": ...
    @staticmethod
    def turso(
        url: str,
        auth_token: Optional[str] = "",
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
    ) -> "LibsqlTraceStorage": ...
    @staticmethod
    def open(
        url: _StrPath,
        auth_token: Optional[str] = None,
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
    ) -> "LibsqlTraceStorage": ...
    @staticmethod
    def from_env(
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
    ) -> "LibsqlTraceStorage": ...

@final
class BufferedTraceWriter(TraceStorage):
    """The batching writer: write calls return the id in microseconds.

    They block only under backpressure (a full queue), at most
    ``enqueue_timeout`` seconds; with ``overflow="reject"`` they never block
    and raise ``QueueFullError`` instead.
    """

    @staticmethod
    def memory(
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
        max_batch_ops: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        queue_capacity: Optional[int] = None,
        queue_capacity_bytes: Optional[int] = None,
        max_op_bytes: Optional[int] = None,
        linger: Optional[float] = None,
        close_timeout: Optional[float] = None,
        flush_timeout: Optional[float] = None,
        enqueue_timeout: Optional[float] = None,
        open_timeout: Optional[float] = None,
        overflow: Optional[_Overflow] = None,
        spill_path: Optional[_StrPath] = None,
        spill_dir: Optional[_StrPath] = None,
        name: Optional[str] = None,
        provisional_step_ids: Optional[bool] = None,
    ) -> "BufferedTraceWriter": ...
    @staticmethod
    def file(
        path: _StrPath,
        *,
        journal_mode: Optional[_JournalMode] = None,
        synchronous: Optional[_SynchronousMode] = None,
        busy_timeout: Optional[float] = None,
        max_batch_ops: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        queue_capacity: Optional[int] = None,
        queue_capacity_bytes: Optional[int] = None,
        max_op_bytes: Optional[int] = None,
        linger: Optional[float] = None,
        close_timeout: Optional[float] = None,
        flush_timeout: Optional[float] = None,
        enqueue_timeout: Optional[float] = None,
        open_timeout: Optional[float] = None,
        overflow: Optional[_Overflow] = None,
        spill_path: Optional[_StrPath] = None,
        spill_dir: Optional[_StrPath] = None,
        name: Optional[str] = None,
        provisional_step_ids: Optional[bool] = None,
    ) -> "BufferedTraceWriter": ...
    @staticmethod
    def turso(url: str, auth_token: Optional[str] = "", **opts: Any) -> "BufferedTraceWriter": ...
    @staticmethod
    def open(url: _StrPath, auth_token: Optional[str] = None, **opts: Any) -> "BufferedTraceWriter": ...
    @staticmethod
    def from_env(**opts: Any) -> "BufferedTraceWriter": ...
    @property
    def name(self) -> str:
        """The ``writer`` label of its metrics: the ``name`` option, or the database file's name."""
        ...
    def stats(self) -> Dict[str, Union[int, float]]:
        """``enqueued``, ``committed``, ``rejected``, ``failed``, ``batches``,
        ``queue_depth`` and more."""
    def recent_errors(self) -> List[str]: ...

@final
class _SessionScope:
    def __enter__(self) -> str: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class _TimestepScope:
    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class SessionTracer:
    """Records one session at a time over either storage class."""

    def __new__(cls, storage: TraceStorage, auto_save: bool = True) -> "SessionTracer": ...
    @staticmethod
    def memory(auto_save: bool = True, **opts: Any) -> "SessionTracer": ...
    @staticmethod
    def file(path: _StrPath, auto_save: bool = True, **opts: Any) -> "SessionTracer": ...
    @staticmethod
    def buffered(path_or_url: _StrPath, auto_save: bool = True, **opts: Any) -> "SessionTracer": ...
    @property
    def storage(self) -> TraceStorage: ...
    @property
    def auto_save(self) -> bool: ...
    @property
    def session_id(self) -> Optional[str]: ...
    def start_session(
        self, session_id: Optional[str] = None, metadata: Optional[_Payload] = None
    ) -> str: ...
    def start_timestep(
        self,
        step_id: str,
        turn_number: Optional[int] = None,
        metadata: Optional[_Payload] = None,
    ) -> None: ...
    def end_timestep(self) -> None: ...
    async def astart_timestep(
        self,
        step_id: str,
        turn_number: Optional[int] = None,
        metadata: Optional[_Payload] = None,
    ) -> None: ...
    async def aend_timestep(self) -> None: ...
    async def aend_session(self, save: bool = True) -> _Trace: ...
    def record_event(self, event: _Event) -> Optional[int]: ...
    def record_message(self, message: _Payload) -> Optional[int]: ...
    def record_outcome_reward(self, reward: _Payload) -> Optional[int]: ...
    def record_event_reward(
        self,
        event_id: int,
        reward: _Payload,
        message_id: Optional[int] = None,
        turn_number: Optional[int] = None,
    ) -> Optional[int]: ...
    def end_session(self, save: bool = True) -> _Trace: ...
    def last_trace(self) -> Optional[_Trace]: ...
    def get_session(self, session_id: str) -> Optional[_Trace]: ...
    def query(self, sql: str, params: _Params = None) -> List[Dict[str, _Json]]: ...
    def delete_session(self, session_id: str) -> bool: ...
    def flush(self, timeout: Optional[float] = None) -> None: ...
    def close(self) -> None: ...
    async def aflush(self, timeout: Optional[float] = None) -> None: ...
    async def aclose(self) -> None: ...
    async def aget_session(self, session_id: str) -> Optional[_Trace]: ...
    async def aquery(self, sql: str, params: _Params = None) -> List[Dict[str, _Json]]: ...
    def session(
        self, session_id: Optional[str] = None, metadata: Optional[_Payload] = None
    ) -> _SessionScope: ...
    def timestep(
        self,
        step_id: str,
        turn_number: Optional[int] = None,
        metadata: Optional[_Payload] = None,
    ) -> _TimestepScope: ...
    def __enter__(self: _T) -> _T: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    async def __aenter__(self: _T) -> _T: ...
    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

def canonical_trace(trace: Mapping[str, Any]) -> _Trace:
    """The trace as the models shape it: every default filled in."""

def canonical_event(event: _Event) -> Dict[str, Any]:
    """The event as the models shape it: every default filled in."""

def _error_for_variant(variant: str) -> TraceWriterError:
    """The exception a crate error of kind ``variant`` maps to (for tests)."""

def _bench_convert(event: _Event, mode: str, n: int) -> None:
    """Converts ``event`` ``n`` times (for the benchmark's profile)."""

def _close_open_writers() -> List[str]:
    """Flushes and closes the writers still open (the package's atexit hook)."""

def tracing_detect_provider(model_name: Optional[str] = None) -> str:
    """The provider of a model name, by the original module's rules:
    ``"openai"``, ``"anthropic"``, ``"google"``, ``"azure"``, ``"local"`` or
    ``"unknown"``."""

def tracing_calculate_cost(model_name: str, input_tokens: int, output_tokens: int) -> Optional[float]:
    """The cost in US dollars from the original module's price table (per
    1,000 tokens), or ``None`` for a model without a price."""
