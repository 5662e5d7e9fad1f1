"""Discord and Slack answering through ENGINE=llamacpp and ENGINE=openai: the real discord.py /
slack-bolt code against the local fake servers, with the real llama.cpp engine on a GGUF the
tests convert, or a real vLLM server (its CPU build) on the same model folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import llamacpp_settings, openai_settings
from tests.platforms import test_discord_e2e as discord_e2e
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
from tests.platforms.test_discord_e2e import mention, message

# The Discord end-to-end tests' fixtures: the fake Discord and a bot started against it.
fake = discord_e2e.fake
start_bot = discord_e2e.start_bot

JUNK = ("<NL>", "</s>", "ユーザー:", "システム:", "\ufffd")


@pytest.fixture(params=["llamacpp", "openai"])
def engine_settings(request: pytest.FixtureRequest, engine_cache: Path) -> dict[str, Any]:
    """The settings of one engine; only the engine a test runs with is started."""
    if request.param == "llamacpp":
        return llamacpp_settings(request.getfixturevalue("gguf_model"), engine_cache)
    return openai_settings(request.getfixturevalue("vllm"))


async def test_discord_mention_is_answered_by_the_engine(
    start_bot, fake, engine_settings: dict[str, Any]
) -> None:
    bot = await start_bot(**engine_settings, max_new_tokens=40)
    await bot.say(message(BOB, mention("こんにちは")))
    (posted,) = fake.messages_in(CHANNEL_ID)
    assert posted.content
    for version in posted.versions:
        assert not any(junk in version for junk in JUNK)


@pytest.fixture
async def slack_fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


async def test_slack_mention_is_answered_by_the_engine(
    make_app: Callable[..., Any], slack_fake: FakeSlack, engine_settings: dict[str, Any]
) -> None:
    async with socket_mode_apps(make_app, slack_fake) as start:
        _, adapter = await start([], **engine_settings, max_new_tokens=40)
        await deliver(slack_fake, slack_mention("やあ", ts=ROOT))
        [post] = await replied(slack_fake, adapter)
        shown = slack_fake.shown(post.args["ts"])
        assert shown and shown[-1]
        assert not any(junk in text for text in shown for junk in JUNK)
