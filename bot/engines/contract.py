"""The engine contract: what the model worker hands an engine and what it gets back.

An engine loads what `MODEL` names into a `LoadedModel`, then generates batches of `Row`s: each
row is one request's prompt (token ids built with the bot's own tokenizer), its sampling, its
adapter, its stop ids and where its text goes. Every engine answers with one outcome per row: a
`GenerationResult`, or the `UserFacingError` that row alone is answered with.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bot.errors import UserFacingError
from bot.models.prompt_formats import PromptFormat
from bot.models.sampling import SamplingParams
from bot.models.tokenizers import Tokenizer

# Where a model's weights run, in one vocabulary for every engine: torch's device names. An
# engine that does not know (a server) says None.
Device = Literal["cpu", "cuda"]


@dataclass
class LoadOptions:
    """How the engines load a model (from the settings)."""

    device: str = "auto"  # auto / cuda / cpu
    dtype: str = "auto"  # auto / fp16 / bf16 / fp32
    quantization: str = "none"  # none / 8bit / 4bit (bitsandbytes, CUDA only)
    prompt_format: str = "auto"
    cache_dir: Path = Path("./data/models")
    hf_token: str | None = None


@dataclass
class LoadedModel:
    """A model an engine serves. The first fields every engine knows; the optional ones only
    some do (a server keeps its device, precision and size to itself): None means unknown
    here, and /status and /metrics say so."""

    name: str
    model: Any  # the engine's own handle (a torch module, a llama.cpp context, a server)
    tokenizer: Tokenizer
    prompt_format: PromptFormat
    context_length: int
    is_demo: bool = False
    sampling_defaults: SamplingParams = field(default_factory=SamplingParams)
    format_reason: str = ""  # why this prompt format, for /status (Japanese)
    folder: Path | None = None  # the local folder it came from, when there is one
    device: Device | None = None
    dtype: str | None = None  # "float32", "bfloat16", a GGUF type ("q4_k_m")
    parameters: int | None = None
    quantization: str = "none"
    supports_lora: bool = True  # False for families peft cannot adapt (GPTSAN)


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


class RowOutput(Protocol):
    """Where a row's text goes, and how the engine learns it was cancelled."""

    cancel_event: threading.Event

    def emit(self, delta: str) -> None:
        """New text of the row (called on the worker thread)."""
        ...


@dataclass(frozen=True)
class Row:
    """One request to generate: its prompt (ids, sampling, adapter), the ids that end it, where
    its text goes, and when it must be done."""

    prompt: PreparedPrompt
    output: RowOutput
    stop_ids: frozenset[int] = frozenset()  # ending tokens (end of text); not streamed
    submitted: float = 0.0  # time.monotonic() when it was queued
    timeout_s: float = 120.0  # from the start of its batch


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


RowOutcome = GenerationResult | UserFacingError  # a row's reply, or the error it is answered


@dataclass(frozen=True)
class EngineInfo:
    """What an engine serves, for /status and the start-up log."""

    engine: str
    detail: str = ""  # e.g. "GGUF q4_k_m, 8 threads, 0 GPU layers" or the server URL
    tokenizer_note: str = ""  # said when the server's tokenizer is used instead of ours


class Engine(Protocol):
    """What the model worker drives. Every method runs on the worker thread only."""

    name: str
    # How `/model <名前>` names a model for this engine (Japanese, shown with `/model` alone).
    model_hint: str

    def load(self, spec: str) -> LoadedModel:
        """Load what `MODEL` names. Raises ModelLoadError with a message saying what to
        change."""
        ...

    def generate(self, model: LoadedModel, rows: Sequence[Row]) -> list[RowOutcome]:
        """Generate every row, streaming text to its output: per row its result, or the error
        to answer it with (one row's failure never fails the others)."""
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

    def available(self) -> list[str] | None:
        """The models this engine offers by name (a server's list), for `/model` alone; None
        when it serves whatever it is given (a folder, a hub id, a GGUF file)."""
        ...

    def check_adapter(
        self, model: LoadedModel, name: str, folder: Path, base_models: tuple[str, ...]
    ) -> None:
        """Raise AdapterMismatch (saying why, in Japanese) unless rows asking for persona
        `name`'s LoRA adapter (trained into `folder`, for `base_models`) can be served by
        `model`."""
        ...


def stop_ids_for(model: LoadedModel) -> frozenset[int]:
    """The ids that end a row of `model`: its end of text."""
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
