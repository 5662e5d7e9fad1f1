"""`ENGINE=transformers`: the in-process engine. Loading (`loader`), batched generation with
per-row sampling and streaming (`batch`, `per_row`), LoRA persona adapters (`lora`), and the
engine the worker drives (`engine`)."""

from bot.engines.transformers.engine import TransformersEngine

__all__ = ["TransformersEngine"]
