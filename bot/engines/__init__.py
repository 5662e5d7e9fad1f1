"""Engines: what generates the tokens. The one package to read to see how a reply is made.

The model worker (`bot/worker.py`) owns scheduling: the queue, batching rows that arrive
together, cancellation, personas. What it hands an engine is a list of rows of token ids that
the bot built with its own tokenizer; what it gets back is, per row, a stream of token ids
(decoded by the bot) and how the row ended. So every engine is fed exactly the prompt the
rinna/LINE sentencepiece parity work produces, whatever tokenizer the engine itself ships.

- `transformers` (`bot.engines.transformers`): in-process `generate`, every family, LoRA
  personas per row, the demo model.
- `llamacpp` (`bot.engines.llamacpp`): GGUF files through llama-cpp-python, quantized on CPUs
  and small GPUs; `python -m bot convert` makes the files.
- `openai` (`bot.engines.openai`): any OpenAI-compatible server (vLLM, llama.cpp server,
  Ollama, LM Studio) over `/v1/completions`.

An engine implements `Engine`. Engines that speak token ids (all but transformers, whose
batched `generate` predates this package) implement `TokenEngine.generate_ids` and inherit the
text side (incremental decoding, stop strings, results) from `bot.engines.rows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.sampling import SamplingParams

if TYPE_CHECKING:
    from bot.errors import UserFacingError
    from bot.model_loader import LoadedModel
    from bot.worker_types import GenerationHandle, GenerationResult, PreparedPrompt

EngineName = Literal["transformers", "llamacpp", "openai"]
ENGINE_NAMES: tuple[str, ...] = ("transformers", "llamacpp", "openai")

# How a row ended, as an engine reports it. The text side adds "stop" (a stop string),
# "cancelled" and "timeout", which it decides itself through `RowSink`.
EngineFinish = Literal["eos", "length", "stopped", "error"]


@dataclass(frozen=True)
class RowRequest:
    """One row to generate: the prompt's token ids and that row's own sampling."""

    ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int] = frozenset()  # ending tokens (end of text); not streamed
    adapter: str | None = None  # a persona's LoRA adapter, by name


@dataclass
class RowEnd:
    """How one row ended. `error` is set (and `finish` is "error") when this row alone failed:
    the other rows of the batch are unaffected."""

    finish: EngineFinish
    error: BaseException | None = None


class RowSink(Protocol):
    """Where an engine sends each row's output; the bot's side decides when a row is done."""

    def token(self, row: int, token_id: int) -> bool:
        """A new token of `row`; False means the row is done (stop string, its token limit)."""
        ...

    def text(self, row: int, text: str) -> bool:
        """New text of `row`, for servers that return no token ids; False means done."""
        ...

    def done(self, row: int) -> bool:
        """True once the row was cancelled or ran past its deadline. Engines poll it between
        steps (and while waiting on a server) so a cancelled row stops within a token."""
        ...


@dataclass(frozen=True)
class EngineInfo:
    """What an engine serves, for /status and the start-up log."""

    engine: str
    detail: str = ""  # e.g. "GGUF q4_k_m, 8 threads, 0 GPU layers" or the server URL
    tokenizer_note: str = ""  # said when the server's tokenizer is used instead of ours


class Engine(Protocol):
    """What the model worker drives. Every method runs on the worker thread only."""

    name: str

    def load(self, spec: str) -> LoadedModel:
        """Load what `MODEL` names. The result reports name, context length, prompt format,
        tokenizer (the bot's), device, precision; `model` holds the engine's own handle.
        Raises ModelLoadError with a message saying what to change."""
        ...

    def generate_batch(
        self,
        model: LoadedModel,
        prepared: Sequence[PreparedPrompt],
        handles: Sequence[GenerationHandle],
        submitted: Sequence[float],
        timeouts: Sequence[float],
    ) -> list[GenerationResult | UserFacingError]:
        """Generate every row, streaming text to each handle: per row its result, or the
        error to answer it with (one row's failure never fails the others)."""
        ...

    def release(self, model: LoadedModel) -> None:
        """Free what `load` took (memory, a server connection)."""
        ...

    def info(self, model: LoadedModel) -> EngineInfo:
        """What is served, for /status."""
        ...

    def memory(self, model: LoadedModel | None) -> str:
        """The memory the model uses, in a few words."""
        ...

    def adapter_available(self, model: LoadedModel, adapter: str) -> bool:
        """Whether a persona's LoRA adapter named `adapter` can be applied to its rows."""
        ...

    def adapter_refusal(self, adapter: str) -> str:
        """Why a persona's adapter cannot be used, for the user (Japanese)."""
        ...


class TokenEngine:
    """Base of the engines that generate token ids (llama.cpp, OpenAI-compatible servers).

    Subclasses implement `load`, `generate_ids`, `release`, `info`; the text side (decoding
    ids with the bot's tokenizer, stop strings, token limits, cancellation, results) is shared
    and lives in `bot.engines.rows`."""

    name = "token"

    def generate_ids(
        self, model: LoadedModel, rows: Sequence[RowRequest], sink: RowSink
    ) -> list[RowEnd]:
        """Generate every row until it ends (a stop id, `params.max_new_tokens`, `sink` says
        done). Rows are generated together where the engine can; a failure confined to one row
        is that row's `RowEnd.error`, not an exception."""
        raise NotImplementedError

    def generate_batch(
        self,
        model: LoadedModel,
        prepared: Sequence[PreparedPrompt],
        handles: Sequence[GenerationHandle],
        submitted: Sequence[float],
        timeouts: Sequence[float],
    ) -> list[GenerationResult | UserFacingError]:
        from bot.engines.rows import run_rows

        return run_rows(self, model, prepared, handles, submitted, timeouts)

    def release(self, model: LoadedModel) -> None:
        model.model = None

    def info(self, model: LoadedModel) -> EngineInfo:
        return EngineInfo(self.name)

    def memory(self, model: LoadedModel | None) -> str:
        from bot.engines.memory import process_memory

        return process_memory()

    def adapter_available(self, model: LoadedModel, adapter: str) -> bool:
        return False

    def adapter_refusal(self, adapter: str) -> str:
        return (
            f"ペルソナ「{adapter}」の LoRA アダプターはこのエンジン（{self.name}）では使えません。"
        )


def stop_ids_for(model: LoadedModel) -> frozenset[int]:
    eos = model.tokenizer.eos_id
    return frozenset() if eos is None else frozenset({eos})


def require_engine_package(module: str, install: str) -> Any:
    """Import an engine's optional package, or fail with the command that installs it."""
    import importlib

    from bot.errors import ModelLoadError

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"このエンジンには {module} が必要です: {install} を実行してください。",
            detail=str(exc),
        ) from exc
