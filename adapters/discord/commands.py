"""The `/chat` slash command group. Each command calls the admin service and shows its answer;
the admin gate and the allow-lists are checked in one place, `interaction_check`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters.discord.sink import NO_MENTIONS
from adapters.discord.translate import channel_ids, conversation_key
from bot.chat.commands import RESET_ADMIN_ONLY
from bot.messages import ConversationKey, repair_text

if TYPE_CHECKING:
    from adapters.discord.client import ChatBot

ADMIN_ONLY = frozenset({"model", "persona", "settings"})
NOT_ADMIN = "このコマンドは管理者だけが使えます。"
NOT_HERE = "このチャンネルではボットを使えない設定になっています。"
NOT_ALLOWED = "ボットを使える人は限られています。管理者に問い合わせてください。"
NO_CONTENT_INTENT_NOTE = (
    "※ いまはメッセージ内容インテントが無効なので、メンションと返信にだけ返事をします。"
    "すべてのメッセージに返事をするには、管理者が Developer Portal で Message Content Intent を"
    "有効にし、DISCORD_MESSAGE_CONTENT=true で起動し直してください。"
)
MAX_CHOICES = 25  # Discord shows at most 25 autocomplete choices


class Refused(app_commands.CheckFailure):
    """The user may not run this command here; `user_message` says why (shown ephemerally)."""

    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


class ChatCommands(app_commands.Group):
    def __init__(self, bot: ChatBot) -> None:
        super().__init__(name="chat", description="チャットボットの操作と設定")
        self.bot = bot

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
        command = interaction.command
        if command is not None and command.name in ADMIN_ONLY and not is_admin:
            raise Refused(NOT_ADMIN)
        is_dm = interaction.guild_id is None
        if (
            command is not None
            and command.name == "reset"
            and not self.bot.admin.may_reset(is_admin=is_admin, is_dm=is_dm)
        ):
            raise Refused(RESET_ADMIN_ONLY)  # before deferring, so only the caller sees it
        return True

    @app_commands.command(description="モデルを切り替えます（管理者のみ）")
    @app_commands.describe(name="demo、Hugging Face の ID、またはフォルダのパス")
    async def model(self, interaction: discord.Interaction, name: str) -> None:
        # Loading takes far longer than the 3 seconds Discord waits for an answer.
        await interaction.response.defer(thinking=True)
        text = await self.bot.admin.set_model(repair_text(name))
        await interaction.followup.send(text, allowed_mentions=NO_MENTIONS)

    @model.autocomplete("name")
    async def _model_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return choices(self.bot.model_names(), current)

    @app_commands.command(description="このチャンネルのペルソナを切り替えます（管理者のみ）")
    @app_commands.describe(name="ペルソナの名前（none で解除）")
    async def persona(self, interaction: discord.Interaction, name: str) -> None:
        # Checking an adapter persona waits for the model worker, which may be busy.
        await interaction.response.defer(thinking=True)
        text = await self.bot.admin.set_persona(_key(interaction), repair_text(name))
        await interaction.followup.send(text, allowed_mentions=NO_MENTIONS)

    @persona.autocomplete("name")
    async def _persona_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return choices([*self.bot.persona_names(), "none"], current)

    @app_commands.command(
        description="このチャンネルの会話を新しく始めます（サーバーでは管理者のみ、DM では誰でも）"
    )
    async def reset(self, interaction: discord.Interaction) -> None:
        # Waits for a reply in progress to be stored, which can take a while.
        await interaction.response.defer()
        text = await self.bot.admin.reset(
            _key(interaction),
            is_admin=self.bot.is_admin_interaction(interaction),
            is_dm=interaction.guild_id is None,
        )
        await interaction.followup.send(text, allowed_mentions=NO_MENTIONS)

    @app_commands.command(description="このチャンネルで生成中の返事を止めます")
    async def stop(self, interaction: discord.Interaction) -> None:
        await _send(interaction, self.bot.admin.stop(_key(interaction)))

    @app_commands.command(description="モデルとこのチャンネルの設定を表示します")
    async def status(self, interaction: discord.Interaction) -> None:
        text = await self.bot.admin.status(_key(interaction))
        await _send(interaction, f"{text}\n{self._chat_channel_line(interaction)}", ephemeral=True)

    @app_commands.command(description="このチャンネルの生成設定を変えます（管理者のみ）")
    @app_commands.describe(
        temperature="ランダムさ（0 で毎回同じ返事、大きいほど自由）",
        max_length="返事の最大の長さ（トークン数）",
        chat_channel="オンにすると、このチャンネルのすべてのメッセージに返事をします",
        clear="True で生成設定を既定に戻します",
    )
    async def settings(
        self,
        interaction: discord.Interaction,
        temperature: app_commands.Range[float, 0.0, 5.0] | None = None,
        max_length: app_commands.Range[int, 1, 2048] | None = None,
        chat_channel: bool | None = None,
        clear: bool = False,
    ) -> None:
        admin, key = self.bot.admin, _key(interaction)
        lines = []
        if clear:
            lines.append(await admin.clear_sampling(key))
        if temperature is not None:
            lines.append(await admin.set_sampling(key, "temperature", str(temperature)))
        if max_length is not None:
            lines.append(await admin.set_sampling(key, "max_new_tokens", str(max_length)))
        if chat_channel is not None:
            lines.append(await self._set_chat_channel(interaction, chat_channel))
        if not lines:  # nothing to change: show what is set
            lines = [await admin.status(key), self._chat_channel_line(interaction)]
        await _send(interaction, "\n".join(lines))

    async def _set_chat_channel(self, interaction: discord.Interaction, enabled: bool) -> str:
        if interaction.guild_id is None or interaction.channel is None:
            return "DM ではいつでも返事をします。"
        # A thread's flag is its parent's, so the setting covers the channel and its threads.
        await self.bot.chat_channels.set(channel_ids(interaction.channel)[-1], enabled)
        if not enabled:
            return "このチャンネルでは、メンションか返信にだけ返事をします。"
        text = "このチャンネル（とそのスレッド）では、すべてのメッセージに返事をします。"
        return text if self.bot.reads_all_messages else f"{text}\n{NO_CONTENT_INTENT_NOTE}"

    def _chat_channel_line(self, interaction: discord.Interaction) -> str:
        channel = interaction.channel
        if interaction.guild_id is None or channel is None:
            return "チャットチャンネル: DM ではいつでも返事をします"
        on = any(c in self.bot.chat_channels for c in channel_ids(channel))
        return f"チャットチャンネル: {'オン' if on else 'オフ'}"


def choices(names: Iterable[str], current: str) -> list[app_commands.Choice[str]]:
    """Autocomplete: the names containing what was typed so far, in order, without repeats."""
    typed = current.strip().lower()
    unique = dict.fromkeys(name for name in names if typed in name.lower())
    return [app_commands.Choice(name=n[:100], value=n[:100]) for n in unique][:MAX_CHOICES]


def _key(interaction: discord.Interaction) -> ConversationKey:
    return conversation_key(interaction.guild_id, interaction.channel)


async def _send(interaction: discord.Interaction, text: str, *, ephemeral: bool = False) -> None:
    await interaction.response.send_message(text, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
