"""What a handler knows about the call it is running: ``mesh.current_call()``."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from .._errors import MeshError

__all__ = ["CALL_CONTEXT", "CallContext", "current_call"]


@dataclass(slots=True)
class CallContext:
    """The call being handled. Read it with :func:`current_call` inside a handler."""

    service: str
    method: str
    call_id: int
    #: Node id of the caller (this node's own id for a local call).
    caller: str
    #: Shared by a call and every call made while handling it.
    trace_id: str
    #: 1 for the first try; retries count up.
    attempt: int
    #: ``time.monotonic()`` at which the caller stops waiting, or None.
    deadline: float | None
    #: For a job of a durable queue: whether this attempt is the last its retry
    #: schedule allows (a failure now sends it to the dead letters), and its id.
    last_attempt: bool = False
    job_id: str | None = None
    # A plain flag: set on the loop, read from worker threads (atomic under the GIL).
    _cancelled: bool = field(default=False, repr=False)

    @property
    def remaining(self) -> float | None:
        """Seconds left before the deadline (never below 0), or None for no deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the caller gave up (cancel or deadline): a sync handler may stop early."""
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True


#: The call the running task (or worker thread) serves: set by the dispatcher around a
#: handler and by mesh.testing's helpers; read by current_call() and by outgoing calls
#: made while serving (they inherit its deadline and trace id).
CALL_CONTEXT: ContextVar[CallContext | None] = ContextVar("mesh_current_call", default=None)


def current_call() -> CallContext:
    """The call this handler is running (also in sync handlers on the worker pool)."""
    context = CALL_CONTEXT.get()
    if context is None:
        raise MeshError("current_call() is only available inside a service handler")
    return context
