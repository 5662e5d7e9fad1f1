"""`ENGINE=transformers`: the in-process engine: every family, LoRA personas per row (peft),
the demo model, 8/4-bit on a GPU. Loading is `bot.model_loader`, batched generation with
per-row sampling and streaming is `bot.batch_generation`; this class is their face to the
worker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bot.engines import EngineInfo

if TYPE_CHECKING:
    from bot.model_loader import LoadedModel
    from bot.worker_types import GenerationHandle, GenerationResult, PreparedPrompt


class TransformersEngine:
    name = "transformers"

    def __init__(self, loader: Callable[[str], LoadedModel]) -> None:
        self._loader = loader

    def load(self, spec: str) -> LoadedModel:
        return self._loader(spec)

    def generate_batch(
        self,
        model: LoadedModel,
        prepared: Sequence[PreparedPrompt],
        handles: Sequence[GenerationHandle],
        submitted: Sequence[float],
        timeouts: Sequence[float],
    ) -> list[GenerationResult]:
        from bot.batch_generation import generate_batch

        return generate_batch(model, prepared, handles, submitted, timeouts)

    def release(self, model: LoadedModel) -> None:
        from bot.batch_generation import free_cache

        model.model = None
        free_cache()

    def info(self, model: LoadedModel) -> EngineInfo:
        return EngineInfo(self.name)

    def memory(self, model: LoadedModel | None) -> str:
        from bot.worker import memory_in_use

        return memory_in_use(model)

    def adapter_available(self, model: LoadedModel, adapter: str) -> bool:
        return True  # peft loads any adapter made for this base (checked when it loads)

    def adapter_refusal(self, adapter: str) -> str:
        return ""
