"""Per-row sampling, so channels with different settings (personas, `/set temperature`) share
one batch. `generate` takes one GenerationConfig for the whole batch; this logits processor
applies each row's own repetition penalty, temperature, top-k and top-p, in the order
transformers applies its own processors, and turns a greedy row (temperature 0) into a one-hot
distribution so sampling picks exactly its best token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.models.sampling import SamplingParams


def shared_generate_kwargs() -> dict[str, Any]:
    """The batch-wide config under which PerRowSampling does all the work."""
    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 0,
        "repetition_penalty": 1.0,
    }


class PerRowSampling:
    def __init__(self, params: Sequence[SamplingParams]) -> None:
        self.params = list(params)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        scores = scores.clone()
        device = scores.device
        penalties = torch.tensor([p.repetition_penalty for p in self.params], device=device)
        if bool((penalties != 1.0).any()):
            seen = torch.gather(scores, 1, input_ids)
            factor = penalties[:, None].to(seen.dtype)
            seen = torch.where(seen < 0, seen * factor, seen / factor)
            scores = scores.scatter(1, input_ids, seen)
        for row, params in enumerate(self.params):
            if params.temperature <= 0:
                best = int(torch.argmax(scores[row]))
                scores[row] = float("-inf")
                scores[row, best] = 0.0
                continue
            logits = scores[row] / params.temperature
            if 0 < params.top_k < logits.shape[-1]:
                kth = torch.topk(logits, params.top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if params.top_p < 1.0:
                ordered, order = torch.sort(logits, descending=False)
                cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
                remove = cumulative <= (1 - params.top_p)
                remove[-1] = False  # always keep the most likely token
                logits = logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))
            scores[row] = logits
        return scores
