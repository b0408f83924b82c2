"""Trace logging for RL rollouts into libsql / SQLite.

``BufferedTraceWriter`` queues writes and commits them in batches on a
background thread: its write calls return the row id in microseconds, so
asyncio code can call them directly. ``LibsqlTraceStorage`` is the plain
backend of the original tracing module (one statement per call), and
``SessionTracer`` records one session at a time over either.

Example::

    import asyncio
    from trace_writer import SessionTracer

    async def main():
        async with SessionTracer.buffered("traces.db") as tracer:
            with tracer.session(metadata={"env": "crafter"}):
                with tracer.timestep("step-0", turn_number=0):
                    tracer.record_event({"event_type": "runtime", "system_instance_id": "agent",
                                         "time_record": {"event_time": 0.0}, "actions": [2]})
            await tracer.aflush()

    asyncio.run(main())
"""

import atexit as _atexit
import sys as _sys

from . import _trace_writer
from ._trace_writer import (
    BufferedTraceWriter,
    CloseFailedError,
    HaltedError,
    DatabaseError,
    InternalError,
    InvalidInputError,
    InvalidStateError,
    LibsqlTraceStorage,
    NoActiveSessionError,
    NoActiveTimestepError,
    NotInitializedError,
    QueueFullError,
    SerializationError,
    SessionAlreadyActiveError,
    SessionTracer,
    SpilledError,
    TimeoutError,
    TraceStorage,
    TraceWriterError,
    WriteFailedError,
    WriterClosedError,
    __version__,
    canonical_event,
    canonical_trace,
    tracing_calculate_cost,
    tracing_detect_provider,
    MAX_NESTING_DEPTH,
)
from ._async import AsyncSessionTracer

__all__ = [
    "AsyncSessionTracer",
    "MAX_NESTING_DEPTH",
    "BufferedTraceWriter",
    "CloseFailedError",
    "HaltedError",
    "DatabaseError",
    "InternalError",
    "InvalidInputError",
    "InvalidStateError",
    "LibsqlTraceStorage",
    "NoActiveSessionError",
    "NoActiveTimestepError",
    "NotInitializedError",
    "QueueFullError",
    "SerializationError",
    "SessionAlreadyActiveError",
    "SessionTracer",
    "SpilledError",
    "TimeoutError",
    "TraceStorage",
    "TraceWriterError",
    "WriteFailedError",
    "WriterClosedError",
    "__version__",
    "canonical_event",
    "canonical_trace",
    "tracing_calculate_cost",
    "tracing_detect_provider",
]


def _close_at_exit() -> None:
    """Flushes and closes writers the program left open, so that the writes
    still queued are not lost when the interpreter exits."""
    for message in _trace_writer._close_open_writers():
        _sys.stderr.write(f"trace_writer: closing a writer at exit failed: {message}\n")


_atexit.register(_close_at_exit)
