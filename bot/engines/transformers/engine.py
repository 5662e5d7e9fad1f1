"""`ENGINE=transformers`: the in-process engine: every family, LoRA personas per row (peft),
the demo model, 8/4-bit on a GPU. Loading is `loader`, batched generation with per-row sampling
and streaming is `batch`, the adapters loaded into the model are `lora.AdapterCache`; this class
is their face to the worker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from bot.engines.contract import EngineInfo, LoadedModel, Row, RowOutcome
from bot.engines.memory import device_memory
from bot.engines.transformers.batch import free_cache, generate_batch
from bot.engines.transformers.lora import AdapterCache, check_adapter
from bot.errors import GENERIC_FAILURE_REPLY, GenerationFailed, UserFacingError

log = logging.getLogger(__name__)


class TransformersEngine:
    name = "transformers"
    model_hint = "demo、Hugging Face の ID、またはフォルダのパス"

    def __init__(self, loader: Callable[[str], LoadedModel], *, max_adapters: int = 4) -> None:
        self._loader = loader
        self.adapters = AdapterCache(max_adapters)

    def load(self, spec: str) -> LoadedModel:
        return self._loader(spec)

    def generate(self, model: LoadedModel, rows: Sequence[Row]) -> list[RowOutcome]:
        """Load the adapters the rows name (a row whose adapter fails is answered alone), then
        generate the rest in one batch."""
        refused: dict[int, UserFacingError] = {}
        pinned = frozenset(r.prompt.adapter for r in rows if r.prompt.adapter)
        for i, row in enumerate(rows):
            error = self._ensure_adapter(model, row, pinned)
            if error is not None:
                refused[i] = error
        going = [row for i, row in enumerate(rows) if i not in refused]
        generated = iter(generate_batch(model, going) if going else [])
        return [refused[i] if i in refused else next(generated) for i in range(len(rows))]

    def _ensure_adapter(
        self, model: LoadedModel, row: Row, pinned: frozenset[str]
    ) -> UserFacingError | None:
        """Load the row's adapter if it is not loaded yet; no adapter of this batch is evicted
        for another of the same batch."""
        prompt = row.prompt
        if not prompt.adapter or prompt.adapter_dir is None:
            return None
        try:
            self.adapters.ensure(
                model, prompt.adapter, prompt.adapter_dir, prompt.adapter_bases, pinned
            )
        except UserFacingError as exc:
            return exc
        except Exception as exc:
            log.exception("loading an adapter failed")
            return GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc))
        return None

    def release(self, model: LoadedModel) -> None:
        self.adapters.reset()
        model.model = None
        free_cache()

    def info(self, model: LoadedModel) -> EngineInfo:
        return EngineInfo(self.name)

    def memory(self, model: LoadedModel | None) -> str:
        return device_memory(model)

    def available(self) -> list[str] | None:
        return None

    def check_adapter(
        self, model: LoadedModel, name: str, folder: Path, base_models: tuple[str, ...]
    ) -> None:
        check_adapter(model, folder, base_models)  # peft loads any adapter made for this base
