"""The `/chat` command group: the chat's command table (bot/chat/commands.py) as Discord
subcommands with typed options and autocomplete, plus Discord's own `channel` toggle (answer
every message in a channel). The admin gate and the allow-lists are checked in one place,
`interaction_check`, before anything is deferred, so a refusal is seen only by its caller."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import discord
from discord import app_commands

from adapters.discord.access import Access
from adapters.discord.chat_channels import ChatChannels
from adapters.discord.sink import NO_MENTIONS
from adapters.discord.translate import channel_ids, conversation_key
from bot.chat.commands import ADMIN_ONLY, COMMANDS, AdminService, Arg, Caller, Command
from bot.errors import NotPermitted
from bot.messages import ConversationKey, repair_text
from bot.models.sampling import SamplingParams

NOT_ADMIN = ADMIN_ONLY
NOT_HERE = "このチャンネルではボットを使えない設定になっています。"
NOT_ALLOWED = "ボットを使える人は限られています。管理者に問い合わせてください。"
NO_CONTENT_INTENT_NOTE = (
    "※ いまはメッセージ内容インテントが無効なので、メンションと返信にだけ返事をします。"
    "すべてのメッセージに返事をするには、管理者が Developer Portal で Message Content Intent を"
    "有効にし、DISCORD_MESSAGE_CONTENT=true で起動し直してください。"
)
MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices
PREFIX = "/chat "
CHANNEL = "channel"  # Discord's own subcommand, beside the table's


class CommandHost(Protocol):
    """What the commands need from the Discord client (adapters/discord/client.py)."""

    admin: AdminService
    access: Access
    chat_channels: ChatChannels
    persona_names: Callable[[], Iterable[str]]
    model_names: Callable[[], Iterable[str]]

    @property
    def reads_all_messages(self) -> bool: ...

    def is_admin_interaction(self, interaction: discord.Interaction) -> bool: ...


class Refused(app_commands.CheckFailure):
    """The user may not run this command here; `user_message` says why (shown ephemerally)."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ChatCommands(app_commands.Group):
    def __init__(self, bot: CommandHost) -> None:
        super().__init__(name="chat", description="チャットボットの操作と設定")
        self.bot = bot
        for command in COMMANDS.values():
            self.add_command(_subcommand(bot, command))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Runs before every /chat command (not before autocomplete, which changes nothing)."""
        access = self.bot.access
        is_admin = self.bot.is_admin_interaction(interaction)
        channel = interaction.channel
        places = channel_ids(channel) if channel is not None else ()
        if not access.allows_place(interaction.guild_id, places):
            raise Refused(NOT_HERE)
        if not access.allows_person(interaction.user, is_admin=is_admin):
            raise Refused(NOT_ALLOWED)
        name = interaction.command.name if interaction.command is not None else ""
        if name == CHANNEL and not is_admin:
            raise Refused(NOT_ADMIN)
        command = COMMANDS.get(name)
        if command is not None:
            options = {k: v for k, v in vars(interaction.namespace).items()}
            try:
                self.bot.admin.check_access(
                    command, _argument(command, options), _caller(self.bot, interaction)
                )
            except NotPermitted as exc:
                raise Refused(exc.user_message) from None
        return True

    @app_commands.command(
        name=CHANNEL,
        description="オンにすると、このチャンネル（とスレッド）のすべてのメッセージに返事をします（管理者のみ）",
    )
    @app_commands.describe(on="オンで全メッセージに返事、オフでメンションと返信にだけ返事")
    async def channel(self, interaction: discord.Interaction, on: bool) -> None:
        await _send(interaction, await self._set_chat_channel(interaction, on), ephemeral=False)

    async def _set_chat_channel(self, interaction: discord.Interaction, enabled: bool) -> str:
        if interaction.guild_id is None or interaction.channel is None:
            return "DM ではいつでも返事をします。"
        # A thread's flag is its parent's, so the setting covers the channel and its threads.
        await self.bot.chat_channels.set(channel_ids(interaction.channel)[-1], enabled)
        if not enabled:
            return "このチャンネルでは、メンションか返信にだけ返事をします。"
        text = "このチャンネル（とそのスレッド）では、すべてのメッセージに返事をします。"
        return text if self.bot.reads_all_messages else f"{text}\n{NO_CONTENT_INTENT_NOTE}"


def chat_channel_line(bot: CommandHost, interaction: discord.Interaction) -> str:
    channel = interaction.channel
    if interaction.guild_id is None or channel is None:
        return "チャットチャンネル: DM ではいつでも返事をします"
    on = any(c in bot.chat_channels for c in channel_ids(channel))
    return f"チャットチャンネル: {'オン' if on else 'オフ'}"


def _subcommand(bot: CommandHost, command: Command) -> app_commands.Command[Any, ..., None]:
    """The table's `command` as a subcommand whose options are its arguments."""

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        argument = _argument(command, options)
        changes = command.who == "reset" or (command.who == "admin_to_change" and bool(argument))
        if command.waits:  # a model load or a busy worker takes longer than Discord's 3 s
            await interaction.response.defer(thinking=True, ephemeral=not changes)
        reply = await bot.admin.run(command.name, argument, _caller(bot, interaction))
        text = reply.text
        if command.name == "status":
            text = f"{text}\n{chat_channel_line(bot, interaction)}"
        await _send(interaction, text, ephemeral=not reply.public)

    parameters = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
        )
    ]
    parameters += [
        inspect.Parameter(
            arg.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_option_type(arg)
        )
        for arg in command.args
    ]
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    described = app_commands.describe(**{arg.name: arg.detail or arg.help for arg in command.args})(
        callback
    )
    subcommand = app_commands.Command(
        name=command.name, description=command.help[:100], callback=described
    )
    for arg in command.args:
        if arg.choices:
            subcommand.autocomplete(arg.name)(_autocomplete(bot, arg))
    return subcommand


def _option_type(arg: Arg) -> Any:
    if arg.kind == "float":
        return app_commands.Range[float, arg.low, arg.high] | None
    if arg.kind == "int":
        return app_commands.Range[int, int(arg.low or 0), int(arg.high or 0)] | None
    return str | None


def _autocomplete(bot: CommandHost, arg: Arg) -> Any:
    def names() -> Iterable[str]:
        if arg.choices == "models":
            return bot.model_names()
        if arg.choices == "personas":
            return [*bot.persona_names(), "none"]
        return [*SamplingParams().as_dict(), "clear"]

    async def offer(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(names(), current)

    return offer


def _argument(command: Command, options: dict[str, Any]) -> str:
    """The options as the text the command takes (`set temperature 0.5`)."""
    values = [options.get(arg.name) for arg in command.args]
    return " ".join(repair_text(str(v)).strip() for v in values if v is not None).strip()


def _caller(bot: CommandHost, interaction: discord.Interaction) -> Caller:
    return Caller(
        _key(interaction),
        is_admin=bot.is_admin_interaction(interaction),
        is_dm=interaction.guild_id is None,
        prefix=PREFIX,
    )


def choices(names: Iterable[str], current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: the names containing what was typed so far, in order, without repeats."""
    typed = current.strip().lower()
    unique = dict.fromkeys(name for name in names if typed in name.lower())
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in unique][:MAX_CHOICES]


def _key(interaction: discord.Interaction) -> ConversationKey:
    return conversation_key(interaction.guild_id, interaction.channel)


async def _send(interaction: discord.Interaction, text: str, *, ephemeral: bool) -> None:
    if interaction.response.is_done():  # deferred: the answer follows up
        await interaction.followup.send(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
        return
    await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
