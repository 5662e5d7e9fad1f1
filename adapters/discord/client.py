"""The Discord client: gateway events in, `IncomingMessage`s to the conversation manager, replies
out through `DiscordReplySink`. No prompt, model or storage knowledge here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import discord
from discord import app_commands

from adapters.discord.access import Access, has_administrator
from adapters.discord.chat_channels import ChatChannels
from adapters.discord.commands import ChatCommands, Refused
from adapters.discord.sink import NO_MENTIONS, DiscordReplySink
from adapters.discord.translate import channel_ids, reason_to_answer, to_incoming
from bot.app.settings import Settings
from bot.chat.commands import AdminService
from bot.errors import UserFacingError
from bot.messages import MessageHandler

log = logging.getLogger(__name__)

APOLOGY = "申し訳ありません、うまく処理できませんでした。もう一度お試しください。"


def make_intents(settings: Settings) -> discord.Intents:
    """Guilds (channels, threads and roles for names and permissions), guild and DM messages,
    and the privileged message-content intent only when the settings ask for it."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.discord_message_content
    return intents


class ChatBot(discord.Client):
    def __init__(
        self,
        *,
        handler: MessageHandler,
        admin: AdminService,
        settings: Settings,
        persona_names: Callable[[], Iterable[str]],
        model_names: Callable[[], Iterable[str]],
        chat_channels: ChatChannels,
        edit_interval_s: float = 1.0,
        **options: Any,
    ) -> None:
        """`options` go to `discord.Client` (tests shorten `guild_ready_timeout`)."""
        # The bot never joins voice; without this discord.py warns about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(intents=make_intents(settings), allowed_mentions=NO_MENTIONS, **options)
        self.handler = handler
        self.admin = admin
        self.settings = settings
        self.persona_names = persona_names
        self.model_names = model_names
        self.chat_channels = chat_channels
        self.edit_interval_s = edit_interval_s
        self.access = Access.from_settings(settings)
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_command_error)
        self._warned_hidden_content = False

    @property
    def reads_all_messages(self) -> bool:
        return self.intents.message_content

    async def setup_hook(self) -> None:
        await self.chat_channels.load()
        self.tree.add_command(ChatCommands(self))
        await self._sync_commands()
        self._log_intents()

    async def _sync_commands(self) -> None:
        guild_ids = self.settings.discord_command_guild_ids
        if not guild_ids:
            # Global commands reach every guild, but Discord may take a while to show changes.
            synced = await self.tree.sync()
            log.info("synced %d global slash command(s)", len(synced))
            return
        for guild_id in guild_ids:
            guild = discord.Object(int(guild_id))
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d slash command(s) to guild %s", len(synced), guild_id)

    def _log_intents(self) -> None:
        if self.reads_all_messages:
            log.info(
                "message content intent is on: answering mentions, replies, DMs and every "
                "message in chat channels"
            )
            return
        log.info(
            "message content intent is off: answering mentions, replies that mention the bot "
            "and DMs. Enabling it (DISCORD_MESSAGE_CONTENT=true and 'Message Content Intent' in "
            "the Developer Portal) adds every message in chat channels and replies sent with "
            "the mention switched off"
        )

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info(
            "logged in to Discord as %s (%s) in %d guild(s)",
            self.user,
            self.user.id,
            len(self.guilds),
        )

    async def on_disconnect(self) -> None:
        if not self.is_closed():  # a lost connection, not our own shutdown
            log.warning("Discord: connection lost; reconnecting (with growing waits)")

    async def on_resumed(self) -> None:
        log.info("Discord: connection resumed")

    async def on_message(self, message: discord.Message) -> None:
        me = self.user
        if me is None:
            return
        guild = message.guild
        my_role = guild.self_role if guild else None
        my_role_id = my_role.id if my_role else None
        reason = reason_to_answer(
            message,
            me_id=me.id,
            my_role_id=my_role_id,
            chat_channels=self.chat_channels,
            allow_dms=self.access.allow_dms,
        )
        if reason is None:
            self._warn_if_content_hidden(message)
            return
        channel = await self._full_channel(message)
        author = message.author
        is_admin = self.access.is_admin(author, administrator=has_administrator(author))
        if not self.access.allows_place(guild.id if guild else None, channel_ids(channel)):
            log.debug("ignored message %s: channel not allowed", message.id)
            return
        if not self.access.allows_person(author, is_admin=is_admin):
            log.debug("ignored message %s: author not allowed", message.id)
            return
        incoming = to_incoming(
            message, me_id=me.id, my_role_id=my_role_id, is_admin=is_admin, channel=channel
        )
        log.debug("answering message %s (%s) in %s", message.id, reason, incoming.key)
        async with DiscordReplySink(message, edit_interval_s=self.edit_interval_s) as sink:
            await self.handler.handle(incoming, sink)

    async def _full_channel(self, message: discord.Message) -> Any:
        """A thread missing from the cache arrives as a PartialMessageable, which cannot say
        that it is a thread; ask Discord once so the thread keeps its own conversation."""
        channel = message.channel
        if isinstance(channel, discord.PartialMessageable) and message.guild is not None:
            try:
                return await self.fetch_channel(channel.id)
            except discord.HTTPException as exc:
                log.warning("could not look up channel %s: %s", channel.id, exc)
        return channel

    def _warn_if_content_hidden(self, message: discord.Message) -> None:
        if self.reads_all_messages or self._warned_hidden_content or message.content:
            return
        if message.author.bot or not any(
            c in self.chat_channels for c in channel_ids(message.channel)
        ):
            return
        self._warned_hidden_content = True
        log.warning(
            "a message in chat channel %s arrived without its text because the message "
            "content intent is off; the bot answers there only when mentioned",
            message.channel.id,
        )

    def is_admin_interaction(self, interaction: discord.Interaction) -> bool:
        return self.access.is_admin(
            interaction.user, administrator=interaction.permissions.administrator
        )

    async def _on_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", error)
        if isinstance(error, Refused):
            text = error.user_message
        elif isinstance(original, UserFacingError):
            text = original.user_message
        else:
            log.error(
                "/chat %s failed", getattr(interaction.command, "name", "?"), exc_info=original
            )
            text = APOLOGY
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=NO_MENTIONS
            )
