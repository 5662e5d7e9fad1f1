"""The engine that `ENGINE` names, built from the settings (the engines themselves know no
settings: they take their options)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bot.app.settings import Settings
from bot.engines.contract import Engine, LoadedModel, LoadOptions


def load_options(settings: Settings) -> LoadOptions:
    return LoadOptions(
        device=settings.device,
        dtype=settings.dtype,
        quantization=settings.quantization,
        prompt_format=settings.prompt_format,
        cache_dir=Path(settings.model_cache_dir),
        hf_token=settings.hf_token.get_secret_value() if settings.hf_token else None,
    )


def create_engine(settings: Settings, loader: Callable[[str], LoadedModel]) -> Engine:
    """`loader` is the transformers engine's (the bot's own loader, or a test's)."""
    if settings.engine == "llamacpp":
        from bot.engines.llamacpp import LlamaCppEngine, LlamaCppOptions

        return LlamaCppEngine(
            LlamaCppOptions(
                n_gpu_layers=settings.n_gpu_layers,
                n_threads=settings.n_threads or os.cpu_count() or 1,
                max_rows=settings.max_batch_size,
                load=load_options(settings),
            )
        )
    if settings.engine == "openai":
        from bot.engines.openai import OpenAIEngine, OpenAIOptions

        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIEngine(
            OpenAIOptions(
                base_url=settings.openai_base_url,
                api_key=key,
                tokenizer=settings.openai_tokenizer,
                load=load_options(settings),
            )
        )
    from bot.engines.transformers import TransformersEngine

    return TransformersEngine(loader, max_adapters=settings.max_cached_adapters)
