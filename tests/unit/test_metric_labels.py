"""The `reason` label of chatbot_refusals_total, from the refusal's class."""

from __future__ import annotations

import pytest

from bot.chat.rate_limit import RateLimited
from bot.errors import AdapterMismatch, InvalidMessage, NotPermitted, UnknownName, UserFacingError
from bot.service.metrics import reason
from bot.serving.worker import Busy


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (InvalidMessage("空です"), "invalid_message"),
        (RateLimited("待って"), "rate_limited"),
        (Busy("混雑"), "busy"),
        (NotPermitted("管理者のみ"), "not_permitted"),
        (UnknownName("なし"), "unknown_name"),
        (AdapterMismatch("別のモデル"), "adapter_mismatch"),
        (UserFacingError("その他"), "user_facing_error"),
    ],
)
def test_refusal_reason_is_the_error_class_in_snake_case(error: UserFacingError, label: str):
    assert reason(error) == label
