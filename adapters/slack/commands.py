"""The `/chat` slash command: subcommands in one table, the admin gate in one place.

Settings apply to the channel the command was typed in (Slack does not say which thread).
Results that change the channel are shown to everyone there; the rest only to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.chat.commands import AdminService, first_word
from bot.errors import NotPermitted, UserFacingError, shorten
from bot.messages import ConversationKey, repair_text

log = logging.getLogger(__name__)

COMMAND = "/chat"
REFUSAL = "このコマンドは管理者だけが使えます。"
GENERIC_FAILURE = "申し訳ありません、コマンドの処理中にエラーが起きました。もう一度お試しください。"
HELP_TEXT = f"""\
使い方: {COMMAND} <サブコマンド>
{COMMAND} status — モデルと、このチャンネルの設定を表示します
{COMMAND} stop — このチャンネルで生成中の返事を止めます
{COMMAND} reset — DM の会話を新しく始めます（スレッドでは「@ボット /reset」）
{COMMAND} persona — ペルソナの一覧を表示します
{COMMAND} persona <名前> — このチャンネルのペルソナを切り替えます（管理者のみ。none で解除）
{COMMAND} model <名前> — モデルを切り替えます（管理者のみ。demo、Hugging Face の ID、フォルダ）
{COMMAND} temperature <値> — このチャンネルの temperature を変えます（管理者のみ。例: 0.7）
{COMMAND} length <トークン数> — このチャンネルの返事の最大の長さを変えます（管理者のみ）
{COMMAND} set <項目> <値> — そのほかの生成設定を変えます（管理者のみ。{COMMAND} set clear で元に戻す）
{COMMAND} help — この説明を表示します"""
CHANNEL_RESET_TEXT = (
    "チャンネルでは、スレッドごとに別の会話です。メンションすると新しい会話が始まります。"
    "スレッドの会話をやり直すには、そのスレッドで「@ボット /reset」と送ってください"
    "（みんなで使うチャンネルでは管理者のみ）。"
)


@dataclass(frozen=True)
class SlashRequest:
    key: ConversationKey  # the channel (thread "")
    user_id: str
    subcommand: str
    argument: str
    is_dm: bool


@dataclass(frozen=True)
class Reply:
    text: str
    public: bool = False  # in_channel rather than ephemeral


Respond = Callable[[Reply], Awaitable[None]]


def parse(text: str) -> tuple[str, str]:
    """`"persona friendly"` -> `("persona", "friendly")`; empty text asks for help. Text that is
    not valid Unicode is repaired first, as messages are."""
    subcommand, argument = first_word(repair_text(text))
    return (subcommand.lower() or "help"), argument


class ChatCommands:
    def __init__(
        self,
        admin: AdminService,
        *,
        is_admin: Callable[[str], Awaitable[bool]],
        stop_channel: Callable[[ConversationKey], str],
    ) -> None:
        self.admin = admin
        self.is_admin = is_admin
        self.stop_channel = stop_channel

    async def run(self, request: SlashRequest, respond: Respond) -> None:
        """Answer one `/chat` (already acknowledged) through `respond`; never raises."""
        entry = SUBCOMMANDS.get(request.subcommand)
        if entry is None:
            await respond(
                Reply(
                    f"「{shorten(request.subcommand)}」というサブコマンドはありません。\n{HELP_TEXT}"
                )
            )
            return
        try:
            if entry.needs_admin(request.argument) and not await self.is_admin(request.user_id):
                raise NotPermitted(REFUSAL)
            if entry.progress and request.argument:
                await respond(Reply(entry.progress))
            reply = await entry.run(self, request)
        except UserFacingError as exc:
            await respond(Reply(exc.user_message))
            return
        except Exception:
            log.exception("%s %s failed in %s", COMMAND, request.subcommand, request.key)
            await respond(Reply(GENERIC_FAILURE))
            return
        await respond(reply)

    async def help(self, request: SlashRequest) -> Reply:
        return Reply(HELP_TEXT)

    async def status(self, request: SlashRequest) -> Reply:
        return Reply(await self.admin.status(request.key))

    async def stop(self, request: SlashRequest) -> Reply:
        return Reply(self.stop_channel(request.key))

    async def reset(self, request: SlashRequest) -> Reply:
        if not request.is_dm:
            return Reply(CHANNEL_RESET_TEXT)
        is_admin = await self.is_admin(request.user_id)
        return Reply(
            await self.admin.reset(request.key, is_admin=is_admin, is_dm=True), public=True
        )

    async def persona(self, request: SlashRequest) -> Reply:
        if not request.argument:
            # The list's hint names the chat command; in Slack it is a subcommand.
            return Reply(self.admin.list_personas(f"{COMMAND} persona"))
        return Reply(await self.admin.set_persona(request.key, request.argument), public=True)

    async def model(self, request: SlashRequest) -> Reply:
        if not request.argument:
            current = self.admin.worker.current
            name = current.name if current else "（読み込み中）"
            return Reply(f"今のモデル: {name}\n切り替え: {COMMAND} model <名前>")
        return Reply(await self.admin.set_model(request.argument), public=True)

    async def temperature(self, request: SlashRequest) -> Reply:
        return await self._sampling(request, "temperature", request.argument)

    async def length(self, request: SlashRequest) -> Reply:
        return await self._sampling(request, "max_new_tokens", request.argument)

    async def set(self, request: SlashRequest) -> Reply:
        if request.argument.lower() == "clear":
            return Reply(await self.admin.clear_sampling(request.key), public=True)
        setting, _, value = request.argument.partition(" ")
        return await self._sampling(request, setting, value.strip())

    async def _sampling(self, request: SlashRequest, setting: str, value: str) -> Reply:
        if not setting or not value:
            return Reply(HELP_TEXT)
        return Reply(await self.admin.set_sampling(request.key, setting, value), public=True)


@dataclass(frozen=True)
class Subcommand:
    run: Callable[[ChatCommands, SlashRequest], Awaitable[Reply]]
    needs_admin: Callable[[str], bool]  # given the argument: changing things is for admins
    progress: str = ""  # shown at once when the work takes a while


def _never(argument: str) -> bool:
    return False


def _with_argument(argument: str) -> bool:
    return bool(argument)


SUBCOMMANDS: dict[str, Subcommand] = {
    "help": Subcommand(ChatCommands.help, _never),
    "status": Subcommand(ChatCommands.status, _never),
    "stop": Subcommand(ChatCommands.stop, _never),
    "reset": Subcommand(ChatCommands.reset, _never),
    "persona": Subcommand(ChatCommands.persona, _with_argument),
    "model": Subcommand(ChatCommands.model, _with_argument, "モデルを読み込んでいます…"),
    "temperature": Subcommand(ChatCommands.temperature, _with_argument),
    "length": Subcommand(ChatCommands.length, _with_argument),
    "set": Subcommand(ChatCommands.set, _with_argument),
}
