"""Discord and Slack answering through ENGINE=llamacpp: the real discord.py / slack-bolt code
against the local fake servers, the real llama.cpp engine on a GGUF the test converts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.engines.llamacpp.convert import convert
from bot.model_loader import LoadOptions
from tests.engine_support import build_served_demo, require_module
from tests.platforms.discord_fake_server import BOB, CHANNEL_ID
from tests.platforms.slack_fake_server import (
    ROOT,
    FakeSlack,
    deliver,
    fake_slack,
    replied,
    socket_mode_apps,
)
from tests.platforms.slack_fake_server import mention as slack_mention
from tests.platforms.test_discord_e2e import fake, mention, message, start_bot  # noqa: F401

JUNK = ("<NL>", "</s>", "ユーザー:", "システム:", "\ufffd")


@pytest.fixture(scope="session")
def gguf_model(model_cache: Path) -> str:
    require_module("llama_cpp")
    folder = build_served_demo(model_cache, model_cache / "served-demo")
    convert(str(folder), "q8_0", LoadOptions(cache_dir=model_cache))
    return str(folder)


async def test_discord_mention_is_answered_by_llamacpp(start_bot, fake, gguf_model) -> None:  # noqa: F811
    bot = await start_bot(engine="llamacpp", model=gguf_model, max_new_tokens=40)
    await bot.say(message(BOB, mention("こんにちは")))
    (posted,) = fake.messages_in(CHANNEL_ID)
    assert posted.content
    for version in posted.versions:
        assert not any(junk in version for junk in JUNK)


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


async def test_slack_mention_is_answered_by_llamacpp(
    make_app: Callable[..., Any], slack_fake: FakeSlack, gguf_model: str
) -> None:
    async with socket_mode_apps(make_app, slack_fake) as start:
        _, adapter = await start([], engine="llamacpp", model=gguf_model, max_new_tokens=40)
        await deliver(slack_fake, slack_mention("やあ", ts=ROOT))
        [post] = await replied(slack_fake, adapter)
        shown = slack_fake.shown(post.args["ts"])
        assert shown and shown[-1]
        assert not any(junk in text for text in shown for junk in JUNK)
