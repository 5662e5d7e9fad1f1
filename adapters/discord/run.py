"""Discord: `python -m bot run` calls `serve(app)` when DISCORD_TOKEN is set.

The adapter lives in `adapters/discord/`; this module only wires it to the app. Setup steps,
invite scopes, intents and settings are in docs/DISCORD.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from adapters.discord.chat_channels import STATE_KEY, ChatChannels
from adapters.discord.client import ChatBot
from bot.errors import PlatformUnreachable
from bot.messages import MessageHandler
from bot.models import catalogue

if TYPE_CHECKING:
    from bot.app.bootstrap import App

log = logging.getLogger(__name__)


class ShardedChatBot(ChatBot, discord.AutoShardedClient):
    """The same bot on discord.py's sharded client: SHARD_COUNT shards, SHARD_IDS in this
    process. Discord sends each guild's events to one shard, so processes running different
    shards never see the same message."""


def create_bot(app: App, *, handler: MessageHandler | None = None, **options: Any) -> ChatBot:
    """The client with its dependencies. `handler` replaces the conversation manager (tests wrap
    it to observe it); `options` go to ChatBot (tests pass a short `edit_interval_s`)."""

    async def read_chat_channels() -> str | None:
        return await app.db(app.repository.get_state, STATE_KEY)

    async def write_chat_channels(value: str) -> None:
        await app.db(app.repository.set_state, STATE_KEY, value)

    def model_names() -> list[str]:
        # The catalogue's short names ("demo" first), then the model being served when it was
        # loaded by hub id or path.
        current = app.worker.current
        return [*catalogue.model_names(), *([current.name] if current else [])]

    settings = app.settings
    client: type[ChatBot] = ChatBot
    if settings.shard_count is not None:
        client = ShardedChatBot
        options = {
            "shard_count": settings.shard_count,
            "shard_ids": settings.shard_ids or None,  # None: every shard in this process
            **options,
        }
    return client(
        handler=handler or app.manager,
        admin=app.admin,
        settings=app.settings,
        persona_names=app.personas.names,
        model_names=model_names,
        chat_channels=ChatChannels(read_chat_channels, write_chat_channels),
        **options,
    )


async def serve(app: App) -> None:
    """Connect to Discord and answer until cancelled (or the connection fails for good).
    Raises PlatformUnreachable when Discord cannot be reached at start; after that, discord.py
    reconnects a dropped gateway connection itself, with exponential backoff, and logs it."""
    token = app.settings.discord_token
    if token is None:
        raise RuntimeError("DISCORD_TOKEN is not set")
    bot = create_bot(app)
    app.monitor.register_platform("discord", lambda: bot.is_ready() and not bot.is_closed())
    async with bot:  # closes the connection on the way out, cancellation included
        try:
            try:
                await bot.login(token.get_secret_value())
            except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
                raise PlatformUnreachable("Discord", exc) from exc
            except discord.DiscordServerError as exc:  # an outage: 5xx from the API
                raise PlatformUnreachable("Discord", exc) from exc
            await bot.connect(reconnect=True)
        except discord.LoginFailure:
            log.error("Discord refused DISCORD_TOKEN; copy the bot token again (docs/DISCORD.md)")
            raise
        except discord.PrivilegedIntentsRequired:
            log.error(
                "DISCORD_MESSAGE_CONTENT=true, but 'Message Content Intent' is not enabled for "
                "this application in the Developer Portal (Bot page); enable it or unset the key"
            )
            raise
