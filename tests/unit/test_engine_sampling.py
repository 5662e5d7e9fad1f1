"""The numpy sampler that llama.cpp rows use keeps exactly the tokens transformers' processors
keep (bot.engines.transformers.per_row.PerRowSampling is checked against them in test_row_sampling.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bot.engines.logits import adjust_logits, banned_ngram_tokens, sample_token
from bot.engines.transformers.per_row import PerRowSampling
from bot.models.sampling import SamplingParams
from tests.unit.test_row_sampling import ROWS as SAMPLED_ROWS

# The rows PerRowSampling is checked with, and a greedy one.
ROWS = [*SAMPLED_ROWS, SamplingParams(temperature=0.0, repetition_penalty=1.3)]


@pytest.mark.parametrize("params", ROWS)
def test_numpy_rows_match_per_row_sampling(params: SamplingParams) -> None:
    generator = torch.Generator().manual_seed(1)
    seen = torch.randint(0, 60, (1, 15), generator=generator)
    logits = torch.randn(1, 60, generator=generator) * 3
    expected = PerRowSampling([params])(seen, logits)[0].numpy()
    got = adjust_logits(logits[0].numpy(), seen[0].tolist(), params)
    assert np.array_equal(np.isinf(got), np.isinf(expected))  # the same tokens survive
    finite = ~np.isinf(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("seen", "n", "banned"),
    [
        ([1, 2, 3, 1, 2], 3, {3}),  # "1 2" was followed by 3 before
        ([1, 2, 3, 1, 2], 2, {3}),  # "2" was followed by 3
        ([5, 5, 5], 2, {5}),
        ([1, 2, 3], 0, set()),  # off
        ([1, 2], 3, set()),  # too short to repeat anything
        ([7, 8, 9, 7, 8, 4, 7, 8], 3, {9, 4}),
    ],
)
def test_no_repeat_ngram(seen: list[int], n: int, banned: set[int]) -> None:
    assert banned_ngram_tokens(seen, n) == banned


def test_greedy_row_takes_the_best_token_and_sampling_follows_the_distribution() -> None:
    logits = np.array([0.0, 3.0, 1.0, math.log(0.5)])
    rng = np.random.default_rng(0)
    assert sample_token(logits, [], SamplingParams(temperature=0), rng) == 1
    params = SamplingParams(temperature=1.0, top_k=2, top_p=1.0)
    draws = [sample_token(logits, [], params, rng) for _ in range(2000)]
    assert set(draws) == {1, 2}  # top-k 2 keeps only the two best
    share = draws.count(1) / len(draws)
    expected = math.exp(3) / (math.exp(3) + math.exp(1))  # 0.881
    assert abs(share - expected) < 0.03
