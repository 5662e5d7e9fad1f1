"""The model worker: the one thread that owns the model.

The asyncio side submits requests and awaits deltas and results without blocking its loop.
Loading, swapping and generating all happen on this thread, one job at a time, so the model
(and later a peft model with several adapters) is never touched by two threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.errors import GenerationFailed, ModelLoadError, UserFacingError
from bot.model_loader import LoadedModel
from bot.sampling import SamplingParams
from bot.tokenizer import IncrementalDecoder

log = logging.getLogger(__name__)
T = TypeVar("T")

OUT_OF_MEMORY_REPLY = (
    "メモリが足りず返事を作れませんでした。短いメッセージにするか、/reset で会話を"
    "新しくしてからもう一度お試しください。"
)
GENERIC_FAILURE_REPLY = (
    "申し訳ありません、返事を作る途中でエラーが起きました。もう一度お試しください。"
)


@dataclass(frozen=True)
class PreparedPrompt:
    """What the model is asked: built on the worker thread with the model that will answer."""

    ids: list[int]
    stop_strings: tuple[str, ...]
    params: SamplingParams
    turns_used: int = 0


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


class GenerationHandle:
    """The asyncio side's view of one request: stream deltas, await the result, cancel."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deltas: asyncio.Queue[str | None] = asyncio.Queue()
        self._result: asyncio.Future[GenerationResult] = loop.create_future()
        self.cancel_event = threading.Event()

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


@dataclass
class _Generate:
    builder: PromptBuilder
    handle: GenerationHandle
    timeout_s: float
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Call:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class ModelWorker:
    def __init__(self, loader: Callable[[str], LoadedModel]) -> None:
        self._loader = loader
        self._jobs: queue.Queue[_Generate | _Call | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.current: LoadedModel | None = None
        self.tokens_generated = 0

    @property
    def queue_depth(self) -> int:
        return self._jobs.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-worker", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the worker thread, after the jobs queued before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Call(fn, loop, future))
        return await future

    async def load(self, spec: str) -> LoadedModel:
        """Load `spec` and make it current. Requests queued earlier finish on the old model; if
        loading fails, the old model keeps serving and ModelLoadError is raised."""

        def swap() -> LoadedModel:
            new = self._loader(spec)
            old, self.current = self.current, new
            if old is not None:
                _release(old)
            return new

        return await self.call(swap)

    def submit(self, builder: PromptBuilder, *, timeout_s: float) -> GenerationHandle:
        handle = GenerationHandle(asyncio.get_running_loop())
        self._jobs.put(_Generate(builder, handle, timeout_s))
        return handle

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if isinstance(job, _Call):
                self._run_call(job)
            else:
                self._run_generate(job)

    def _run_call(self, job: _Call) -> None:
        try:
            value, error = job.fn(), None
        except BaseException as exc:
            value, error = None, exc

        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(settle)

    def _run_generate(self, job: _Generate) -> None:
        handle = job.handle
        model = self.current
        try:
            if model is None:
                raise ModelLoadError(
                    "モデルがまだ読み込まれていません。少し待ってからお試しください。"
                )
            result = _generate(model, job)
            self.tokens_generated += result.new_tokens
            handle.finish(result)
        except UserFacingError as exc:
            handle.finish(None, exc)
        except Exception as exc:
            if _is_out_of_memory(exc):
                log.warning(
                    "out of memory while generating; the request was answered with an error"
                )
                _free_cache()
                handle.finish(None, GenerationFailed(OUT_OF_MEMORY_REPLY, detail=str(exc)))
            else:
                log.exception("generation failed")
                handle.finish(None, GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc)))


class _TokenStreamer:
    """A per-token streamer for `generate`: decodes each new token and sends the text delta."""

    def __init__(self, model: LoadedModel, handle: GenerationHandle) -> None:
        self.decoder = IncrementalDecoder(model.tokenizer)
        self.eos_id = model.tokenizer.eos_id
        self.handle = handle
        self.prompt_seen = False
        self.new_tokens = 0
        self.saw_eos = False
        self.first_token_at: float | None = None

    @property
    def text(self) -> str:
        return self.decoder.text

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt itself
            self.prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self.first_token_at = self.first_token_at or time.monotonic()
            self.new_tokens += 1
            if token_id == self.eos_id:
                self.saw_eos = True
                continue
            delta = self.decoder.push(token_id)
            if delta:
                self.handle.emit(delta)

    def end(self) -> None:
        pass


def _generate(model: LoadedModel, job: _Generate) -> GenerationResult:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    started = time.monotonic()
    handle = job.handle
    if handle.cancel_event.is_set():
        return _empty_result(model, job, started, "cancelled")
    prepared = job.builder(model)
    streamer = _TokenStreamer(model, handle)
    deadline = started + job.timeout_s
    stops = (*prepared.stop_strings, "</s>")
    longest_stop = max(len(s) for s in stops)
    reason: dict[str, str] = {}

    class StopWhen(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if handle.cancel_event.is_set():
                reason.setdefault("why", "cancelled")
            elif time.monotonic() > deadline:
                reason.setdefault("why", "timeout")
            elif any(s in streamer.text[-(longest_stop + 16) :] for s in stops):
                reason.setdefault("why", "stop")
            stop = "why" in reason
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    input_ids = torch.tensor([prepared.ids], dtype=torch.long, device=model.device)
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    with torch.inference_mode():
        model.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([StopWhen()]),
            eos_token_id=tokenizer.eos_id,
            pad_token_id=pad_id,
            **prepared.params.generate_kwargs(),
        )
    finished = time.monotonic()
    if "why" in reason:
        finish_reason = reason["why"]
    elif streamer.saw_eos:
        finish_reason = "eos"
    else:
        finish_reason = "length"
    first = streamer.first_token_at or finished
    return GenerationResult(
        raw_text=streamer.text,
        finish_reason=finish_reason,
        prompt_tokens=len(prepared.ids),
        new_tokens=streamer.new_tokens,
        stop_strings=prepared.stop_strings,
        turns_used=prepared.turns_used,
        model_name=model.name,
        queue_wait_s=started - job.submitted,
        prompt_s=first - started,
        generation_s=finished - first,
    )


def _empty_result(model: LoadedModel, job: _Generate, started: float, why: str) -> GenerationResult:
    return GenerationResult(
        "",
        why,
        0,
        0,
        model.prompt_format.stop_strings,
        0,
        model.name,
        started - job.submitted,
        0.0,
        0.0,
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _free_cache() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _release(model: LoadedModel) -> None:
    model.model = None
    _free_cache()
