"""Choosing the next token from a row's logits, for engines that hand the bot raw logits
(llama.cpp's multi-sequence batch). The same settings, in the same order, as transformers'
processors and `bot.engines.transformers.per_row.PerRowSampling`: repetition penalty over every id the row has
seen (prompt included), no-repeat n-grams, temperature (0 = greedy), top-k, then top-p."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bot.models.sampling import SamplingParams


def banned_ngram_tokens(seen: Sequence[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in `seen` (transformers' no_repeat_ngram)."""
    if n <= 0 or len(seen) < n:
        return set()
    prefix = tuple(seen[len(seen) - n + 1 :]) if n > 1 else ()
    banned = set()
    for i in range(len(seen) - n + 1):
        if tuple(seen[i : i + n - 1]) == prefix:
            banned.add(seen[i + n - 1])
    return banned


def adjust_logits(logits: np.ndarray, seen: Sequence[int], params: SamplingParams) -> np.ndarray:
    """The row's log-probabilities to sample from (before softmax), with -inf for tokens that
    are filtered out. Greedy rows (temperature 0) keep only their best token."""
    scores = np.array(logits, dtype=np.float64, copy=True)
    if params.repetition_penalty != 1.0 and len(seen):
        ids = np.unique(np.asarray(seen, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < scores.shape[0])]
        values = scores[ids]
        penalty = params.repetition_penalty
        scores[ids] = np.where(values < 0, values * penalty, values / penalty)
    for token in banned_ngram_tokens(seen, params.no_repeat_ngram_size):
        if 0 <= token < scores.shape[0]:
            scores[token] = -np.inf
    if params.temperature <= 0:
        best = int(np.argmax(scores))
        out = np.full_like(scores, -np.inf)
        out[best] = 0.0
        return out
    scores = scores / params.temperature
    if 0 < params.top_k < scores.shape[0]:
        kth = np.partition(scores, -params.top_k)[-params.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if params.top_p < 1.0:
        order = np.argsort(scores, kind="stable")  # ascending, as transformers' top-p
        probs = _softmax(scores[order])
        remove = np.cumsum(probs) <= (1 - params.top_p)
        remove[-1] = False  # always keep the most likely token
        scores[order[remove]] = -np.inf
    return scores


def sample_token(
    logits: np.ndarray, seen: Sequence[int], params: SamplingParams, rng: np.random.Generator
) -> int:
    scores = adjust_logits(logits, seen, params)
    if params.temperature <= 0:
        return int(np.argmax(scores))
    return int(rng.choice(scores.shape[0], p=_softmax(scores)))


def _softmax(scores: np.ndarray) -> np.ndarray:
    finite = scores[np.isfinite(scores)]
    top = finite.max() if finite.size else 0.0
    exp = np.exp(scores - top)
    return exp / exp.sum()
