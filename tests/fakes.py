"""Test doubles that keep the real wiring: a scripted model that plays back chosen replies
through the real tokenizer, streamer and stopping criteria of the worker."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch

from bot.model_loader import LoadedModel, LoadOptions, load_model


class ScriptedModel:
    """Stands in for a transformers model: `generate` emits the next scripted reply token by
    token, honouring stopping criteria like the real one. Records the prompts it was given."""

    def __init__(
        self, tokenizer: Any, replies: Iterable[str], *, eos: bool = True, delay_s: float = 0.0
    ) -> None:
        self.tokenizer = tokenizer
        self.replies: deque[str] = deque(replies)
        self.eos = eos
        self.delay_s = delay_s
        self.prompts: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()

    def generate(
        self,
        *,
        input_ids: torch.Tensor,
        streamer: Any,
        stopping_criteria: Any,
        max_new_tokens: int,
        **kwargs: Any,
    ) -> torch.Tensor:
        import time

        self.started.set()
        self.prompts.append(self.tokenizer.decode(input_ids[0].tolist()))
        self.calls.append({"max_new_tokens": max_new_tokens, **kwargs})
        reply = self.replies.popleft() if self.replies else "はい。"
        ids = self.tokenizer.encode(reply)
        if self.eos and self.tokenizer.eos_id is not None:
            ids.append(self.tokenizer.eos_id)
        streamer.put(input_ids)
        out = input_ids
        for token in ids[:max_new_tokens]:
            if self.delay_s:
                time.sleep(self.delay_s)
            step = torch.tensor([token])
            streamer.put(step)
            out = torch.cat([out, step.view(1, 1)], dim=1)
            if bool(stopping_criteria(out, None).all()) or token == self.tokenizer.eos_id:
                break
        return out

    def parameters(self):
        return iter(())


def demo_loader(cache_dir: Any) -> Callable[[str], LoadedModel]:
    """The real loader, fixed to CPU/fp32 and a test cache folder."""
    options = LoadOptions(device="cpu", dtype="fp32", cache_dir=cache_dir)
    return lambda spec: load_model(spec, options)


def scripted_loader(
    cache_dir: Any, replies: Iterable[str], **kwargs: Any
) -> tuple[Callable[[str], LoadedModel], ScriptedModel | None]:
    """A loader giving the demo model's real tokenizer and format with a scripted model.
    Returns the loader and, once loaded, `loader.model` is the ScriptedModel."""
    real = demo_loader(cache_dir)
    holder: dict[str, ScriptedModel] = {}

    def load(spec: str) -> LoadedModel:
        loaded = real(spec)
        scripted = ScriptedModel(loaded.tokenizer, replies, **kwargs)
        holder["model"] = scripted
        return replace(loaded, model=scripted)

    load.holder = holder  # type: ignore[attr-defined]
    return load, None
