"""The model worker: the one thread that owns the model.

The asyncio side submits requests and awaits deltas and results without blocking its loop.
Loading, swapping and generating all happen on this thread, so the model (and later a peft
model with several adapters) is never touched by two threads.

Requests that arrive while the model is busy wait in a bounded queue and are generated
together in the next batch: first come, first served, up to `max_batch_size` rows. Rows may
differ in every sampling setting but `no_repeat_ngram_size` (the transformers engine samples
each row itself); a row that cannot join keeps its place. The oldest waiting request always
leads the next batch, so none starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.engines.contract import (
    Engine,
    GenerationResult,
    LoadedModel,
    PreparedPrompt,
    Row,
    stop_ids_for,
)
from bot.errors import GENERIC_FAILURE_REPLY, GenerationFailed, ModelLoadError, UserFacingError
from bot.serving.jobs import GenerationHandle, PromptBuilder

log = logging.getLogger(__name__)
T = TypeVar("T")


class Busy(UserFacingError):
    """The queue is full."""


@dataclass
class _Generate:
    builder: PromptBuilder
    handle: GenerationHandle
    timeout_s: float
    submitted: float = field(default_factory=time.monotonic)
    prepared: PreparedPrompt | None = None


@dataclass
class _Call:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Job = _Generate | _Call | None


class ModelWorker:
    def __init__(
        self,
        engine: Engine,
        *,
        loader: Callable[[str], LoadedModel] | None = None,
        max_batch_size: int = 8,
        max_queue: int = 64,
        idle_unload_s: float = 0,
        batch_window_s: float = 0.0,
    ) -> None:
        """`loader`: the engine's `load` wrapped (timed for the metrics, say); by default the
        engine's own."""
        self.engine = engine
        self._loader = loader or engine.load
        self.max_batch_size = max(1, max_batch_size)
        self.max_queue = max_queue
        self.idle_unload_s = idle_unload_s
        self.batch_window_s = batch_window_s
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._backlog: deque[_Job] = deque()  # touched only by the worker thread
        self._waiting = 0
        self._arriving = 0  # requests announced but not yet submitted
        self._waiting_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: LoadedModel | None = None
        self.unloaded_spec: str | None = None  # set while the model is unloaded for idleness
        self.tokens_generated = 0
        self._recent: deque[tuple[float, int, float]] = deque(maxlen=256)
        self.batch_sizes: deque[int] = deque(maxlen=256)  # recent batch sizes, for the bench
        self._last_active = time.monotonic()

    @property
    def queue_depth(self) -> int:
        """Generation requests waiting to start."""
        return self._waiting

    def recent_tokens_per_second(self, window_s: float = 60.0) -> float:
        """Tokens generated per second of generation, over batches that ended recently."""
        now = time.monotonic()
        recent = [
            (tokens, busy) for ended, tokens, busy in list(self._recent) if now - ended <= window_s
        ]
        busy = sum(b for _, b in recent)
        return sum(t for t, _ in recent) / busy if busy > 0 else 0.0

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
        """Load `spec` and make it current. Requests queued earlier finish on the old model, later
        ones wait; if loading fails the old model keeps serving and ModelLoadError is raised."""

        def swap() -> LoadedModel:
            new = self._loader(spec)
            old, self.current = self.current, new
            self.unloaded_spec = None
            if old is not None:
                self.engine.release(old)
            return new

        return await self.call(swap)

    def submit(self, builder: PromptBuilder, *, timeout_s: float) -> GenerationHandle:
        """Queue a request. Raises Busy when the queue is full."""
        with self._waiting_lock:
            if self.max_queue and self._waiting >= self.max_queue:
                raise Busy(
                    "ただいま混み合っています。少し時間をおいてからもう一度話しかけてください。"
                )
            handle = GenerationHandle(asyncio.get_running_loop())
            handle.position = self._waiting
            self._waiting += 1
        self._jobs.put(_Generate(builder, handle, timeout_s))
        return handle

    # --- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch: list[_Generate] = []
            try:
                self._fill_backlog()
                job = self._backlog.popleft()
                if job is None:
                    return
                if isinstance(job, _Call):
                    self._run_call(job)
                    continue
                batch = [job]  # answered with an error below if anything breaks from here
                self._gather(job)
                batch = self._take_batch(job)
                if batch:
                    self._run_batch(batch)
            except Exception as exc:
                # Whatever broke (a CUDA error while freeing memory, say), the thread must live
                # on: a dead worker would leave every waiting request hanging.
                log.exception("the model worker hit an unexpected error; it keeps serving")
                for failed in batch:
                    failed.handle.finish(
                        None, GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc))
                    )
            self._last_active = time.monotonic()

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Callable[..., GenerationHandle]]:
        """Announce a request that is being prepared (history read, message stored) and yield
        the function that submits it. While requests are arriving, the worker holds a batch
        it is about to start for them (up to `batch_window_s`), so a burst of channels shares
        one batch; a lone request never waits."""
        with self._waiting_lock:
            self._arriving += 1
        announced = True

        def submit(builder: PromptBuilder, *, timeout_s: float) -> GenerationHandle:
            nonlocal announced
            handle = self.submit(builder, timeout_s=timeout_s)
            with self._waiting_lock:
                self._arriving -= 1
            announced = False
            return handle

        try:
            yield submit
        finally:
            if announced:
                with self._waiting_lock:
                    self._arriving -= 1

    def _gather(self, first: _Generate) -> None:
        """Before starting a batch, wait for requests still being prepared (see `arriving`)."""
        deadline = time.monotonic() + self.batch_window_s
        while sum(isinstance(j, _Generate) for j in self._backlog) + 1 < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._arriving == 0 and self._jobs.empty()):
                return
            try:
                self._backlog.append(self._jobs.get(timeout=min(remaining, 0.005)))
            except queue.Empty:
                continue

    def _fill_backlog(self) -> None:
        """Move newly queued jobs into the backlog, waiting for one if there is none."""
        while not self._backlog:
            timeout = self.idle_unload_s or None
            try:
                self._backlog.append(self._jobs.get(timeout=timeout))
            except queue.Empty:
                self._unload_if_idle()
        while True:
            try:
                self._backlog.append(self._jobs.get_nowait())
            except queue.Empty:
                return

    def _unload_if_idle(self) -> None:
        idle = time.monotonic() - self._last_active
        if self.current is not None and self.idle_unload_s and idle >= self.idle_unload_s:
            log.info("unloading %s after %.0f s idle", self.current.name, idle)
            self.unloaded_spec = self.current.name
            old, self.current = self.current, None
            self.engine.release(old)

    def _dequeued(self) -> None:
        with self._waiting_lock:
            self._waiting -= 1

    def _prepare(self, job: _Generate) -> bool:
        """Build the job's prompt with the current model, once. Answers the job with an error
        if that fails."""
        if job.prepared is not None:
            return True
        try:
            model = self.current_or_reload()
            if job.handle.cancel_event.is_set():
                job.handle.finish(_cancelled(model, job))
                return False
            job.prepared = job.builder(model)
            return True
        except Exception as exc:
            self._fail(job, exc, "building a prompt failed")
        return False

    @staticmethod
    def _fail(job: _Generate, exc: Exception, what: str) -> None:
        if isinstance(exc, UserFacingError):
            job.handle.finish(None, exc)
            return
        log.exception(what, exc_info=exc)
        job.handle.finish(None, GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc)))

    def current_or_reload(self) -> LoadedModel:
        """The model now serving, reloaded if it was unloaded for idleness. Worker thread only."""
        if self.current is None and self.unloaded_spec:
            log.info("reloading %s after idle unload", self.unloaded_spec)
            self.current = self._loader(self.unloaded_spec)
            self.unloaded_spec = None
        if self.current is None:
            raise ModelLoadError("モデルがまだ読み込まれていません。少し待ってからお試しください。")
        return self.current

    def _take_batch(self, first: _Generate) -> list[_Generate]:
        """The oldest request plus later ones with the same sampling settings, in arrival order,
        never reaching past a model swap or other call queued in between."""
        self._dequeued()
        if not self._prepare(first):
            return []
        assert first.prepared is not None
        key = _sampling_key(first.prepared)
        batch = [first]
        # FCFS: a request that cannot join (another no_repeat_ngram_size) keeps its place and
        # leads a later batch.
        for job in list(self._backlog):
            if not isinstance(job, _Generate) or len(batch) >= self.max_batch_size:
                break
            if not self._prepare(job):
                self._backlog.remove(job)
                self._dequeued()
                continue
            assert job.prepared is not None
            if _sampling_key(job.prepared) != key:
                continue
            self._backlog.remove(job)
            self._dequeued()
            batch.append(job)
        return batch

    def _run_batch(self, batch: list[_Generate]) -> None:
        model = self.current
        assert model is not None
        started = time.monotonic()
        # Failures of single rows, and of `generate` itself (out of memory included), are
        # answered row by row inside the engine's generate; what escapes it is a bug for every row.
        stop_ids = stop_ids_for(model)
        rows = [
            Row(job.prepared, job.handle, stop_ids, job.submitted, job.timeout_s)  # type: ignore[arg-type]
            for job in batch
        ]
        outcomes = self.engine.generate(model, rows)
        self.batch_sizes.append(len(batch))
        results = [o for o in outcomes if isinstance(o, GenerationResult)]
        new_tokens = sum(r.new_tokens for r in results)
        self.tokens_generated += new_tokens
        self._recent.append((time.monotonic(), new_tokens, time.monotonic() - started))
        for job, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, GenerationResult):
                job.handle.finish(outcome)
            else:
                job.handle.finish(None, outcome)

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


def _sampling_key(prepared: PreparedPrompt) -> Any:
    # Token limits, temperature, top-p/top-k and repetition penalty are applied per row
    # (the transformers engine's per_row.py, llama.cpp's own sampler, a server's request);
    # no_repeat_ngram_size is one setting for a whole transformers batch.
    return prepared.params.no_repeat_ngram_size


def _cancelled(model: LoadedModel, job: _Generate) -> GenerationResult:
    waited = time.monotonic() - job.submitted
    return GenerationResult(
        "", "cancelled", 0, 0, model.prompt_format.stop_strings, 0, model.name, waited, 0.0, 0.0
    )
