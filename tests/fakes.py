"""Test doubles that keep the real wiring: a scripted model that plays back chosen replies
through the real tokenizer, streamer and stopping criteria of the worker."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch

from bot.engines.contract import LoadedModel, LoadOptions
from bot.engines.transformers.loader import load_model


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
        self.batch_sizes: list[int] = []
        self.started = threading.Event()

    def generate(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        streamer: Any,
        stopping_criteria: Any,
        max_new_tokens: int,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Each row plays back the next scripted reply; finished rows receive padding."""
        import time

        self.started.set()
        rows = input_ids.shape[0]
        self.batch_sizes.append(rows)
        scripts = []
        for row in range(rows):
            prompt_ids = input_ids[row][attention_mask[row].bool()].tolist()
            self.prompts.append(self.tokenizer.decode(prompt_ids))
            self.calls.append({"max_new_tokens": max_new_tokens, **kwargs})
            ids = self.tokenizer.encode(self.replies.popleft() if self.replies else "はい。")
            if self.eos and self.tokenizer.eos_id is not None:
                ids.append(self.tokenizer.eos_id)
            scripts.append(ids)
        pad = kwargs.get("pad_token_id") or 0
        streamer.put(input_ids)
        out = input_ids
        done = torch.zeros(rows, dtype=torch.bool)
        for step in range(max_new_tokens):
            if self.delay_s:
                time.sleep(self.delay_s)
            tokens = [
                pad if done[r] or step >= len(scripts[r]) else scripts[r][step] for r in range(rows)
            ]
            finished_now = torch.tensor(
                [step >= len(scripts[r]) - 1 for r in range(rows)], dtype=torch.bool
            )
            step_tensor = torch.tensor(tokens)
            streamer.put(step_tensor)
            out = torch.cat([out, step_tensor.view(rows, 1)], dim=1)
            done = done | stopping_criteria(out, None).cpu() | finished_now
            if bool(done.all()):
                break
        return out

    def parameters(self):
        return iter(())


def demo_loader(cache_dir: Any, prompt_format: str = "auto") -> Callable[[str], LoadedModel]:
    """The real loader, fixed to CPU/fp32 and a test cache folder."""
    options = LoadOptions(
        device="cpu", dtype="fp32", cache_dir=cache_dir, prompt_format=prompt_format
    )
    return lambda spec: load_model(spec, options)


def scripted_loader(
    cache_dir: Any, replies: Iterable[str], **kwargs: Any
) -> tuple[Callable[[str], LoadedModel], ScriptedModel | None]:
    """A loader giving the demo model's real tokenizer and format with a scripted model.
    Returns the loader and, once loaded, `loader.model` is the ScriptedModel."""
    real = demo_loader(cache_dir, kwargs.pop("prompt_format", "auto"))
    holder: dict[str, ScriptedModel] = {}

    def load(spec: str) -> LoadedModel:
        loaded = real(spec)
        scripted = ScriptedModel(loaded.tokenizer, replies, **kwargs)
        holder["model"] = scripted
        return replace(loaded, model=scripted)

    load.holder = holder  # type: ignore[attr-defined]
    return load, None
