"""The values passed between the asyncio side and the model worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.model_loader import LoadedModel
from bot.sampling import SamplingParams
from bot.tokenizer import IncrementalDecoder


@dataclass(frozen=True)
class PreparedPrompt:
    """What the model is asked: built on the worker thread with the model that will answer."""

    ids: list[int]
    stop_strings: tuple[str, ...]
    params: SamplingParams
    turns_used: int = 0
    adapter: str | None = None  # a persona's LoRA adapter name, None for the base model
    adapter_dir: Path | None = None
    adapter_bases: tuple[str, ...] = ()  # base models the persona file says it fits


PromptBuilder = Callable[[LoadedModel], PreparedPrompt]


@dataclass(frozen=True)
class GenerationResult:
    raw_text: str
    finish_reason: str  # eos, stop, length, cancelled, timeout
    prompt_tokens: int
    new_tokens: int
    stop_strings: tuple[str, ...]
    turns_used: int
    model_name: str
    queue_wait_s: float
    prompt_s: float
    generation_s: float
    batch_size: int = 1


@dataclass
class BatchRow:
    """One request inside a batch, as both batch paths (transformers' `generate`, the token
    engines) keep it: what was asked, where its text goes, its counts and timings."""

    prepared: PreparedPrompt
    handle: GenerationHandle
    submitted: float
    deadline: float
    decoder: IncrementalDecoder
    stops: tuple[str, ...] = ()
    new_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None

    def finish(self, reason: str) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
            self.finished_at = time.monotonic()


def row_result(
    row: BatchRow, text: str, model_name: str, started: float, ended: float, batch_size: int
) -> GenerationResult:
    """A finished row's result: its text, counts and timings (queue wait, time to the first
    token, generation) measured from the batch's start `started` and end `ended`."""
    first = row.first_token_at or ended
    done = row.finished_at or ended
    return GenerationResult(
        raw_text=text,
        finish_reason=row.finish_reason or "length",
        prompt_tokens=len(row.prepared.ids),
        new_tokens=row.new_tokens,
        stop_strings=row.prepared.stop_strings,
        turns_used=row.prepared.turns_used,
        model_name=model_name,
        queue_wait_s=started - row.submitted,
        prompt_s=first - started,
        generation_s=done - first,
        batch_size=batch_size,
    )


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
