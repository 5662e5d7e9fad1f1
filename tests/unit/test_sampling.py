from __future__ import annotations

import pytest

from bot.errors import InvalidMessage
from bot.models.sampling import FORMAT_DEFAULTS, SamplingParams, validate_overrides


def test_card_defaults_per_format():
    assert FORMAT_DEFAULTS["rinna"].temperature == 0.7
    assert FORMAT_DEFAULTS["rinna"].repetition_penalty == 1.1
    assert (FORMAT_DEFAULTS["line"].top_p, FORMAT_DEFAULTS["line"].top_k) == (0.9, 0)


def test_zero_temperature_means_greedy_without_sampling_flags():
    kwargs = SamplingParams(temperature=0).generate_kwargs()
    assert kwargs["do_sample"] is False
    assert "temperature" not in kwargs and "top_p" not in kwargs


def test_overrides_apply_in_order():
    params = FORMAT_DEFAULTS["rinna"].with_overrides({"temperature": "0.3", "max_new_tokens": 64})
    assert (params.temperature, params.max_new_tokens, params.repetition_penalty) == (0.3, 64, 1.1)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"temperature": "hot"}, "数値"),
        ({"temperature": 9}, "範囲"),
        ({"colour": 1}, "不明"),
        ({"max_new_tokens": 0}, "範囲"),
    ],
)
def test_bad_overrides_are_refused_with_a_reason(overrides, fragment):
    with pytest.raises(InvalidMessage) as caught:
        validate_overrides(overrides)
    assert fragment in caught.value.user_message
