"""What a channel's next reply uses, through the real pipeline: /status shows exactly the
sampling the model is then called with (model defaults, .env, persona, channel /set) and where
each value came from; reply budgets that would leave no room for the prompt are refused or
capped; unknown commands are answered, not chatted; /reset is for admins in shared channels."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import pytest

from bot.chat.effective_settings import max_reply_tokens
from tests.conftest import message
from tests.integration.test_pipeline import ask, stored_texts

_SETTING_LINE = re.compile(r"^・(\w+)=([\d.]+)（(.+)）$", re.M)


def shown_settings(status: str) -> dict[str, tuple[float, str]]:
    return {m[1]: (float(m[2]), m[3]) for m in _SETTING_LINE.finditer(status)}


async def test_status_shows_what_the_next_reply_uses_and_where_it_comes_from(make_app):
    app = await make_app(replies=["はい。"], max_new_tokens=64, top_p=0.9)
    await ask(app, "/persona friendly", admin=True)
    await ask(app, "/set top_k 20", admin=True)
    shown = shown_settings((await ask(app, "/status")).final)
    await ask(app, "こんにちは")
    used = app.scripted.calls[0]
    for name in ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"):
        assert shown[name][0] == pytest.approx(used[name]), name
    assert shown["max_new_tokens"] == (64, ".env/環境変数 MAX_NEW_TOKENS")
    assert shown["top_p"] == (0.9, ".env/環境変数 TOP_P")
    assert shown["temperature"] == (0.8, "ペルソナ friendly")
    assert shown["top_k"] == (20, "このチャンネルの /set")
    assert shown["no_repeat_ngram_size"][1] == "モデルの既定"


async def test_status_counts_the_default_persona(make_app):
    app = await make_app(replies=["はい。"], default_persona="concierge")
    status = (await ask(app, "/status")).final
    assert "ペルソナ concierge" in status
    assert shown_settings(status)["temperature"] == (0.6, "ペルソナ concierge")
    await ask(app, "こんにちは")
    assert app.scripted.calls[0]["temperature"] == pytest.approx(0.6)


async def test_a_reply_budget_that_fills_the_context_is_refused_by_set(make_app):
    app = await make_app(replies=["はい。"])
    context = app.worker.current.context_length
    refused = (await ask(app, "/set max_new_tokens 1500", admin=True)).final
    assert f"{max_reply_tokens(context)}" in refused and "以下" in refused
    ok = await ask(app, f"/set max_new_tokens {max_reply_tokens(context)}", admin=True)
    assert "にしました" in ok.final
    assert (await ask(app, "こんにちは")).final == "はい。"


async def test_an_env_reply_budget_too_long_for_the_model_is_capped_with_a_warning(
    make_app, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.WARNING):
        app = await make_app(replies=["はい。"], max_new_tokens=1500)
    cap = max_reply_tokens(app.worker.current.context_length)
    assert any("MAX_NEW_TOKENS=1500" in r.getMessage() for r in caplog.records)
    assert (await ask(app, "こんにちは")).final == "はい。"
    assert app.scripted.calls[0]["max_new_tokens"] == cap
    assert shown_settings((await ask(app, "/status")).final)["max_new_tokens"][0] == cap


async def test_a_long_preamble_is_not_blamed_on_a_short_message(make_app):
    app = await make_app(replies=["はい。"])
    friendly = app.personas.get("friendly")
    app.personas._personas["wordy"] = replace(
        friendly, name="wordy", preamble="とても長い前置きです。" * 200
    )
    await ask(app, "/persona wordy", admin=True)
    answer = (await ask(app, "こんにちは")).final
    assert "メッセージが長すぎ" not in answer and "ペルソナ" in answer
    assert stored_texts(app) == []


async def test_a_really_long_message_is_still_called_too_long(make_app):
    app = await make_app(replies=["はい。"])
    answer = (await ask(app, "これはとても長いメッセージです。" * 150)).final
    assert "メッセージが長すぎ" in answer


@pytest.mark.parametrize("text", ["/foo", "/Foo bar", "/persona_list", "/set-it 1"])
async def test_an_unknown_command_lists_the_commands_and_stores_nothing(make_app, text):
    app = await make_app(replies=["はい。"])
    answer = (await ask(app, text)).final
    assert text.split()[0] in answer and "/help" in answer and "/reset" in answer
    assert stored_texts(app) == [] and app.scripted.prompts == []


@pytest.mark.parametrize("text", ["/usr/bin/python が動きません", "/ω/ って何？", "/1 です", "/"])
async def test_text_that_merely_starts_with_a_slash_is_chat(make_app, text):
    app = await make_app(replies=["はい。"])
    assert (await ask(app, text)).final == "はい。"
    assert [role for role, _ in stored_texts(app)] == ["user", "assistant"]


async def test_an_echoed_name_is_shortened(make_app):
    app = await make_app(replies=[])
    long_name = "x" * 10_000
    for text in (f"/persona {long_name}", f"/{long_name}", f"/set {long_name} 1"):
        answer = (await ask(app, text, admin=True)).final
        assert len(answer) < 1_000 and "…" in answer, text[:20]


async def test_reset_in_a_shared_channel_is_for_admins(make_app):
    app = await make_app(replies=["はい。"] * 3)
    await ask(app, "こんにちは")
    refused = (await ask(app, "/reset")).final
    assert "管理者" in refused
    assert len(stored_texts(app)) == 2
    assert "リセット" in (await ask(app, "/reset", admin=True)).final
    assert stored_texts(app) == []


async def test_reset_in_a_dm_is_open_to_its_person(make_app):
    app = await make_app(replies=["はい。"])
    dm = message("こんにちは", channel="dm1", dm=True)
    await app.manager.handle(dm, _Sink())
    sink = _Sink()
    await app.manager.handle(replace(dm, text="/reset"), sink)
    assert "リセット" in sink.final


async def test_reset_can_be_opened_to_everyone(make_app):
    app = await make_app(replies=[], reset_requires_admin=False)
    assert "リセット" in (await ask(app, "/reset")).final


class _Sink:
    final = ""

    async def update(self, text: str) -> None:
        return None

    async def finish(self, text: str) -> None:
        self.final = text
