"""Per-row sampling matches transformers' own processors row by row."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from bot.engines.transformers.per_row import PerRowSampling
from bot.models.sampling import SamplingParams

ROWS = [
    SamplingParams(temperature=0.7, repetition_penalty=1.1),  # rinna card
    SamplingParams(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.1),  # LINE card
    SamplingParams(temperature=1.3, top_p=0.5, top_k=7),
    SamplingParams(temperature=0.2, top_k=1),
    SamplingParams(temperature=1.0, top_p=1.0, top_k=0),
]


def reference(params: SamplingParams, input_ids, scores):
    """What transformers does for one request alone with these settings."""
    if params.repetition_penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)(input_ids, scores)
    scores = TemperatureLogitsWarper(params.temperature)(input_ids, scores)
    if params.top_k:
        scores = TopKLogitsWarper(params.top_k)(input_ids, scores)
    if params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(input_ids, scores)
    return scores


def test_each_row_gets_exactly_what_it_would_get_alone():
    torch.manual_seed(0)
    input_ids = torch.randint(0, 50, (len(ROWS), 12))
    scores = torch.randn(len(ROWS), 50) * 3
    mixed = PerRowSampling(ROWS)(input_ids, scores)
    for row, params in enumerate(ROWS):
        alone = reference(params, input_ids[row : row + 1], scores[row : row + 1].clone())
        assert torch.allclose(mixed[row], alone[0], equal_nan=False), params
        kept = torch.isfinite(mixed[row])
        assert torch.equal(kept, torch.isfinite(alone[0]))


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_a_greedy_row_keeps_only_its_best_token(penalty):
    input_ids = torch.tensor([[1, 2, 3], [1, 2, 3]])
    scores = torch.tensor([[0.1, 5.0, 4.9, 0.2, -1.0], [0.1, 5.0, 4.9, 0.2, -1.0]])
    params = [
        SamplingParams(temperature=0, repetition_penalty=penalty),
        SamplingParams(temperature=0.8),
    ]
    out = PerRowSampling(params)(input_ids, scores)
    expected_best = int(
        torch.argmax(
            reference(
                SamplingParams(temperature=1.0, repetition_penalty=penalty),
                input_ids[:1],
                scores[:1].clone(),
            )
        )
    )
    assert int(torch.isfinite(out[0]).sum()) == 1
    assert int(torch.argmax(out[0])) == expected_best
    assert torch.isfinite(out[1]).all()


def test_the_input_scores_are_not_modified():
    scores = torch.randn(2, 10)
    before = scores.clone()
    PerRowSampling([SamplingParams(temperature=0), SamplingParams(top_k=2)])(
        torch.zeros((2, 3), dtype=torch.long), scores
    )
    assert torch.equal(scores, before)
