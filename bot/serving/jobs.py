"""The values passed between the asyncio side and the model worker thread: the prompt builder
a request brings, and the handle it gets back (the engine's `RowOutput` for its row)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot.engines.contract import GenerationResult, LoadedModel, PreparedPrompt

__all__ = ["GenerationHandle", "GenerationResult", "PreparedPrompt", "PromptBuilder"]

PromptBuilder = Callable[[LoadedModel], PreparedPrompt]


class GenerationHandle:
    """The asyncio side's view of one request: stream deltas, await the result, cancel."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._result: asyncio.Future[GenerationResult] = loop.create_future()
        self.cancel_event = threading.Event()
        self.position = 0  # requests ahead of this one when it was queued

    def cancel(self) -> None:
        """Ask the worker to stop this generation; it ends within a token."""
        self.cancel_event.set()

    async def deltas(self) -> AsyncIterator[str]:
        while (delta := await self._deltas.get()) is not None:
            yield delta

    async def result(self) -> GenerationResult:
        return await self._result

    # Called on the worker thread.
    def _send(self, callback: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(callback, *args)

    def emit(self, delta: str) -> None:
        self._send(self._deltas.put_nowait, delta)

    def finish(self, result: GenerationResult | None, error: BaseException | None = None) -> None:
        def settle() -> None:
            self._deltas.put_nowait(None)
            if self._result.done():
                return
            if error is not None:
                self._result.set_exception(error)
            else:
                self._result.set_result(result)  # type: ignore[arg-type]

        self._send(settle)
