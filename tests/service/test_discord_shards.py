"""Discord sharding: SHARD_COUNT and SHARD_IDS run the real discord.py sharded client on the
process's shards, against the fake Discord (REST and gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest
import yarl
from pydantic import ValidationError

from adapters.discord.run import ShardedChatBot, create_bot
from bot.app.settings import Settings
from tests.platforms.discord_fake_server import ALICE, BOT_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.platforms.discord_fake_server import message as discord_message

WAIT_S = 10.0
SHARDS = 2
GUILD_SHARD = (GUILD_ID >> 22) % SHARDS  # the shard Discord routes the guild's events to


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url)
    )
    yield server
    await server.close()


async def test_a_process_runs_the_shards_it_is_given_and_answers_on_them(
    make_app: Callable[..., Any], fake: FakeDiscord
) -> None:
    app = await make_app(
        replies=["シャードから返事します。"],
        discord_token="fake-token",
        discord_command_guild_ids=str(GUILD_ID),
        shard_count=SHARDS,
        shard_ids=str(GUILD_SHARD),
    )
    bot = create_bot(app, edit_interval_s=0.1, guild_ready_timeout=0.05)
    assert isinstance(bot, ShardedChatBot)
    task = asyncio.create_task(bot.start("fake-token"))
    try:
        await asyncio.wait_for(fake.ready.wait(), WAIT_S)
        assert fake.identify is not None and fake.identify["shard"] == [GUILD_SHARD, SHARDS]
        await fake.dispatch("MESSAGE_CREATE", discord_message(ALICE, f"<@{BOT_ID}> こんにちは"))
        posted = await fake.wait_for(
            lambda: [m for m in fake.messages_in(CHANNEL_ID) if "シャード" in m.content],
            timeout=WAIT_S,
        )
        assert posted[-1].content == "シャードから返事します。"
    finally:
        await bot.close()
        await asyncio.wait_for(task, WAIT_S)
        # Let the handlers discord.py scheduled while closing run before the loop ends.
        events = [t for t in asyncio.all_tasks() if t.get_name().startswith("discord.py:")]
        if events:
            await asyncio.wait(events, timeout=WAIT_S)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SHARD_IDS": "0"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, "outside 0..1"),
        ({"SHARD_COUNT": "0"}, "greater than or equal to 1"),
    ],
)
def test_shard_settings_that_cannot_work_stop_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=error):
        Settings(_env_file=None)


def test_without_shard_count_the_bot_is_one_unsharded_client(make_settings) -> None:
    assert Settings(_env_file=None).shard_count is None
    assert make_settings(shard_count=3, shard_ids="0,2").shard_ids == [0, 2]
