"""Sampling settings: each prompt format's defaults from the model cards, then overrides from the
environment, the persona and the channel, in that order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bot.errors import InvalidMessage, shorten


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.7  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 50  # 0 turns top-k filtering off
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def with_overrides(self, overrides: Mapping[str, Any]) -> SamplingParams:
        return replace(self, **validate_overrides(overrides))

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
        }
        if self.temperature <= 0:
            return {**kwargs, "do_sample": False}
        return {
            **kwargs,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# rinna PPO card: temperature 0.7, repetition_penalty 1.1, max_new_tokens 128.
# LINE card: temperature 0.7, top_p 0.9, top_k 0, repetition_penalty 1.1.
# rinna base card: temperature 0.8 (top_p 0.95 keeps a base model on topic).
FORMAT_DEFAULTS: dict[str, SamplingParams] = {
    "rinna": SamplingParams(temperature=0.7, repetition_penalty=1.1),
    "line": SamplingParams(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.1),
    "plain": SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.05),
    # GPTSAN's card shows only greedy decoding; sampled like the base models, a little cooler.
    "gptsan": SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1),
}

LIMITS: dict[str, tuple[float, float]] = {
    "max_new_tokens": (1, 2048),
    "temperature": (0.0, 5.0),
    "top_p": (0.01, 1.0),
    "top_k": (0, 1000),
    "repetition_penalty": (0.5, 3.0),
    "no_repeat_ngram_size": (0, 16),
}


def validate_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check override names and ranges; raise InvalidMessage with a readable reason."""
    known = {f.name: f.type for f in fields(SamplingParams)}
    clean: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in known:
            raise InvalidMessage(
                f"不明な設定です: {shorten(name)}（使えるもの: {', '.join(known)}）"
            )
        low, high = LIMITS[name]
        try:
            number = int(value) if known[name] == "int" else float(value)
        except (TypeError, ValueError):
            raise InvalidMessage(f"{name} には数値を指定してください。") from None
        if not low <= number <= high:
            raise InvalidMessage(f"{name} は {low:g}〜{high:g} の範囲で指定してください。")
        clean[name] = number
    return clean
