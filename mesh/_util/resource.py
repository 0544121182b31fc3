"""The ``async with`` protocol of the runtime's objects, written once."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncResource:
    """``async with x:`` starts ``x`` (:meth:`start`, nothing by default) and closes it
    (:meth:`aclose`) on the way out, whatever happened."""

    async def start(self) -> None:
        """Make the resource ready (the default: it is ready when made)."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
