"""The one computation of what a reply uses: layers in order, each value's source, the cap."""

from __future__ import annotations

import pytest

from bot.chat.effective_settings import MODEL_SOURCE, effective_sampling, max_reply_tokens
from bot.models.sampling import SamplingParams

DEFAULTS = SamplingParams(temperature=0.7, repetition_penalty=1.1)


@pytest.mark.parametrize(
    ("layers", "context", "expected", "sources", "capped_from"),
    [
        pytest.param(
            (), 2048, {"temperature": 0.7}, {"temperature": MODEL_SOURCE}, None, id="model"
        ),
        pytest.param(
            (
                ("env", {"temperature": 0.5, "max_new_tokens": 64}),
                ("persona", {"temperature": 0.8}),
            ),
            2048,
            {"temperature": 0.8, "max_new_tokens": 64},
            {"temperature": "persona", "max_new_tokens": "env"},
            None,
            id="later-layers-win",
        ),
        pytest.param(
            (("env", {"max_new_tokens": 1500}), ("channel", {"top_k": "20"})),
            1024,
            {"max_new_tokens": 512, "top_k": 20},
            {"max_new_tokens": "env", "top_k": "channel"},
            1500,
            id="capped-at-half-the-context",
        ),
        pytest.param(
            (("env", {"max_new_tokens": 1024}),),
            2048,
            {"max_new_tokens": 1024},
            {"max_new_tokens": "env"},
            None,
            id="half-is-allowed",
        ),
    ],
)
def test_layers(layers, context, expected, sources, capped_from):
    result = effective_sampling(DEFAULTS, layers, context)
    for name, value in expected.items():
        assert getattr(result.params, name) == value
    for name, source in sources.items():
        assert result.sources[name] == source
    assert result.capped_from == capped_from


@pytest.mark.parametrize(("context", "cap"), [(2048, 1024), (1024, 512), (1280, 640), (1, 1)])
def test_max_reply_tokens_leaves_half_for_the_prompt(context, cap):
    assert max_reply_tokens(context) == cap
