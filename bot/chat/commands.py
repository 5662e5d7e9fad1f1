"""The chat's commands, each defined once in `COMMANDS`: its name, who may run it, its
arguments, its handler and one line of help. The console (and a mention that starts with "/")
types them as `/name argument`, Slack as `/chat name argument`, Discord picks them as `/chat`
subcommands; every platform renders its commands from this table (adapters/*/commands.py) and
runs them through `AdminService.run`, where the admin checks live.

Adding a command is one `Command` entry and its handler.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from bot.chat.effective_settings import SettingsResolver, max_reply_tokens
from bot.chat.locks import InFlight, KeyedLocks
from bot.chat.ports import Personas
from bot.engines.contract import LoadedModel
from bot.errors import NotPermitted, shorten
from bot.messages import ConversationKey, IncomingMessage
from bot.models.sampling import LIMITS, SamplingParams, validate_overrides
from bot.serving.worker import ModelWorker
from bot.storage.db_thread import DatabaseThread
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

MODEL_CHOICE_KEY = "model_choice"
ADMIN_ONLY = "このコマンドは管理者だけが使えます。"
RESET_ADMIN_ONLY = (
    "みんなで使うチャンネルでは、/reset は管理者だけが使えます（DM ではいつでも使えます）。"
)
THREADED_RESET_TEXT = (
    "チャンネルでは、スレッドごとに別の会話です。メンションすると新しい会話が始まります。"
    "スレッドの会話をやり直すには、そのスレッドで「@ボット /reset」と送ってください"
    "（みんなで使うチャンネルでは管理者のみ）。"
)
# A command is "/" and an ASCII word, then whitespace or the end: "/foo" and "/Foo bar" are
# commands (unknown ones are answered with the list), while "/usr/bin/python が…", "/ω/",
# "/1" or "/" alone are ordinary messages that happen to start with a slash.
_COMMAND = re.compile(r"/([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")


def parse_command(text: str) -> tuple[str, str] | None:
    """`"/set temperature 0.5"` -> `("set", "temperature 0.5")`; None when `text` is chat."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    return match.group(1).lower(), text[match.end() :].strip()


@dataclass(frozen=True)
class Arg:
    """One argument. Typed platforms (Discord) offer it as an option of this kind, range and
    choices; text platforms take it as a word (the last argument takes the rest of the line)."""

    name: str
    help: str  # a word or two, shown in the usage: `/model <名前>`
    kind: Literal["text", "float", "int"] = "text"
    low: float | None = None
    high: float | None = None
    choices: Literal["", "models", "personas", "settings"] = ""  # offered while it is typed
    detail: str = ""  # a longer description, where the platform shows one (Discord)

    @classmethod
    def setting(cls, setting: str, name: str, help: str, detail: str) -> Arg:
        """A sampling setting's value, with the range `/set` accepts for it."""
        low, high = LIMITS[setting]
        kind: Literal["float", "int"] = (
            "int" if isinstance(getattr(SamplingParams(), setting), int) else "float"
        )
        return cls(name, help, kind, low, high, detail=detail)


@dataclass(frozen=True)
class Caller:
    """Who runs a command, where, and how commands are typed there."""

    key: ConversationKey
    is_admin: bool
    is_dm: bool = False
    prefix: str = "/"  # "/" (console, mentions) or "/chat " (the platforms' slash command)
    # True where the platform names only the channel (Slack's slash commands know no thread):
    # /stop stops every thread of it, /reset explains how to reset a thread.
    whole_channel: bool = False


@dataclass(frozen=True)
class CommandReply:
    text: str
    public: bool = False  # the channel sees it (it changed the channel), not only the caller


Handler = Callable[["AdminService", Caller, str], Awaitable[CommandReply]]
Who = Literal["anyone", "admin_to_change", "reset"]


@dataclass(frozen=True)
class Command:
    name: str
    help: str  # one line (Japanese)
    handler: Handler  # given the caller and the argument text
    args: tuple[Arg, ...] = ()
    # anyone; admins only when it changes something (an argument is given); /reset's own rule
    who: Who = "anyone"
    progress: str = ""  # said at once while it works, when it has an argument (a model load)
    waits: bool = False  # may wait on the model worker or a reply in progress

    def usage(self, prefix: str = "/") -> str:
        return f"{prefix}{self.name}" + "".join(f" <{arg.help}>" for arg in self.args)


class AdminService:
    def __init__(
        self,
        *,
        repository: Repository,
        db: DatabaseThread,
        worker: ModelWorker,
        personas: Personas,
        locks: KeyedLocks,
        in_flight: InFlight,
        resolver: SettingsResolver,
        configured_model: str = "",
        reset_requires_admin: bool = True,
    ) -> None:
        self.repository = repository
        self.db = db
        self.worker = worker
        self.personas = personas
        self.locks = locks
        self.in_flight = in_flight
        self.resolver = resolver
        self.configured_model = configured_model
        self.reset_requires_admin = reset_requires_admin

    @staticmethod
    def is_command(text: str) -> bool:
        """Command-shaped text (see `parse_command`), known or not."""
        return parse_command(text) is not None

    async def run_text_command(self, message: IncomingMessage, text: str) -> str:
        """A command typed as text (`/name argument`), answered as text."""
        name, argument = parse_command(text) or ("", "")
        caller = Caller(message.key, message.is_admin, message.is_dm)
        typed = text.split(maxsplit=1)[0]  # as written, not lower-cased
        return (await self.run(name, argument, caller, typed=typed)).text

    async def run(
        self, name: str, argument: str, caller: Caller, *, typed: str = ""
    ) -> CommandReply:
        """Run command `name` for `caller`; an unknown name is answered with the list.
        Raises NotPermitted (and other UserFacingErrors) with the message for the user."""
        command = COMMANDS.get(name)
        if command is None:
            shown = typed or f"{caller.prefix}{name}"
            return CommandReply(
                f"「{shorten(shown)}」というコマンドはありません。\n{help_text(caller.prefix)}"
            )
        self.check_access(command, argument, caller)
        return await command.handler(self, caller, argument)

    def check_access(self, command: Command, argument: str, caller: Caller) -> None:
        """The one admin gate: raises NotPermitted with the reason when `caller` may not run
        `command` with `argument`."""
        if command.who == "admin_to_change" and argument and not caller.is_admin:
            raise NotPermitted(ADMIN_ONLY)
        # Where only the channel is named, /reset explains threads to anyone instead.
        explains = caller.whole_channel and not caller.is_dm
        may = self.may_reset(is_admin=caller.is_admin, is_dm=caller.is_dm)
        if command.who == "reset" and not may and not explains:
            raise NotPermitted(RESET_ADMIN_ONLY)

    def may_reset(self, *, is_admin: bool, is_dm: bool) -> bool:
        """In a shared channel one member's /reset erases everyone's context: admins only,
        unless RESET_REQUIRES_ADMIN=false. A DM is its person's own."""
        return is_admin or is_dm or not self.reset_requires_admin

    async def reset(self, key: ConversationKey, *, is_admin: bool, is_dm: bool) -> str:
        if not self.may_reset(is_admin=is_admin, is_dm=is_dm):
            raise NotPermitted(RESET_ADMIN_ONLY)
        async with self.locks.hold(key):  # waits for a reply in progress to be stored first
            await self.db(self.repository.reset, key)
        return "会話をリセットしました。新しく話しかけてください。"

    def stop(self, key: ConversationKey, *, whole_channel: bool = False) -> str:
        """Stop the reply being generated in `key` (with `whole_channel`, in any thread of its
        channel)."""
        stopped = (
            self.in_flight.cancel_channel(key) if whole_channel else self.in_flight.cancel(key)
        )
        return "生成を止めました。" if stopped else "このチャンネルで生成中の返事はありません。"

    def list_personas(self, command: str = "/persona") -> str:
        lines = ["使えるペルソナ:"]
        for name in self.personas.names():
            persona = self.personas.get(name)
            lines.append(f"・{name}（{persona.display_name}）— {persona.description}")
        lines.append(f"切り替え: {command} <名前>、解除: {command} none")
        return "\n".join(lines)

    async def set_persona(self, key: ConversationKey, name: str) -> str:
        if name.lower() in ("none", "off", "なし"):
            await self.db(self.repository.set_persona, key, None)
            return "ペルソナを解除しました。"
        persona = self.personas.get(name)
        if persona.adapter is not None:
            adapter = persona.adapter

            def check() -> None:  # on the worker thread, against the model serving then
                current = self.worker.current_or_reload()
                self.worker.engine.check_adapter(
                    current, persona.name, adapter, persona.base_models
                )

            await self.worker.call(check)  # raises AdapterMismatch with the reason
        model = self.worker.current
        if (
            persona.adapter is None
            and model is not None
            and not persona.fits(model.prompt_format.name)
        ):
            return (
                f"ペルソナ「{name}」は {persona.prompt_format} 形式のモデル用です。"
                f"今のモデル（{model.name}、{model.prompt_format.name} 形式）では使えません。"
            )
        await self.db(self.repository.set_persona, key, persona.name)
        return f"ペルソナを「{persona.display_name}」（{persona.name}）にしました。"

    async def model_usage(self, command: str = "/model") -> str:
        """`/model` alone: the model serving now, how to switch, and what a server offers."""
        engine = self.worker.engine
        current = self.worker.current.name if self.worker.current else "（読み込み中）"
        names = await self.worker.call(engine.available)
        if names is None:
            return f"今のモデル: {current}\n使い方: {command} <名前>（{engine.model_hint}）"
        offered = "\n".join(f"・{shorten(n, 200)}" for n in names) or "（なし）"
        return (
            f"今のモデル: {current}\n使い方: {command} <名前>。"
            f"サーバーが提供しているモデル:\n{offered}"
        )

    async def set_model(self, spec: str) -> str:
        previous = self.worker.current.name if self.worker.current else "（なし）"
        log.info("switching model from %s to %s", previous, spec)
        loaded = await self.worker.load(spec)  # a ModelLoadError leaves the old model serving
        await self.db(
            self.repository.set_state,
            MODEL_CHOICE_KEY,
            json.dumps({"model": spec, "configured": self.configured_model}),
        )
        suffix = "（デモモデル: 返事は意味をなしません）" if loaded.is_demo else ""
        lines = [f"モデルを {loaded.name} に切り替えました{suffix}。"]
        if self.resolver.env_budget_warning(loaded, loaded.name):  # logged by the loader
            cap = max_reply_tokens(loaded.context_length)
            lines.append(
                f"（MAX_NEW_TOKENS はこのモデルには長すぎるため、返事は最大 {cap} トークンにします）"
            )
        return "\n".join(lines)

    async def startup_model(self) -> str:
        """The model to load at start: an admin's `/model` choice survives a restart, unless the
        operator has since changed MODEL (then the new MODEL wins)."""
        saved = await self.db(self.repository.get_state, MODEL_CHOICE_KEY)
        if saved:
            choice = json.loads(saved)
            if choice.get("configured") == self.configured_model and choice.get("model"):
                return str(choice["model"])
        return self.configured_model

    async def set_sampling(self, key: ConversationKey, setting: str, value: str) -> str:
        if not setting or not value:
            names = "、".join(SamplingParams().as_dict())
            return f"使い方: /set <項目> <値>（項目: {names}）、/set clear で元に戻します。"
        clean = validate_overrides({setting: value})
        self.resolver.check_reply_budget(setting, clean[setting], self.worker.current)
        current = (await self.db(self.repository.channel_settings, key)).sampling
        await self.db(self.repository.set_sampling, key, {**current, **clean})
        return f"このチャンネルの {setting} を {clean[setting]} にしました。"

    async def clear_sampling(self, key: ConversationKey) -> str:
        await self.db(self.repository.set_sampling, key, {})
        return "このチャンネルの生成設定を既定に戻しました。"

    async def status(self, key: ConversationKey) -> str:
        """The model, and exactly what this channel's next reply uses (see effective_settings)."""
        model = self.worker.current
        channel = await self.db(self.repository.channel_settings, key)
        conversation_id = await self.db(self.repository.active_conversation, key)
        messages = await self.db(self.repository.count_messages, conversation_id)
        setup = self.resolver.setup(channel)
        persona = setup.persona.name if setup.persona else "なし"
        if setup.persona_is_default:
            persona += "（DEFAULT_PERSONA）"
        lines = []
        if model is None:
            lines.append("モデル: 読み込み中")
        else:
            demo = "（デモモデル）" if model.is_demo else ""
            why = f"（判定: {model.format_reason}）" if model.format_reason else ""
            info = self.worker.engine.info(model)
            engine = f"エンジン: {info.engine}" + (f"（{info.detail}）" if info.detail else "")
            lines += [
                f"モデル: {model.name}{demo}",
                engine + (f"\n注意: {info.tokenizer_note}" if info.tokenizer_note else ""),
                f"形式: {model.prompt_format.name}{why}、文脈長 {model.context_length} トークン",
                _device_line(model),
            ]
        lines += [
            f"メモリ: {self.worker.engine.memory(model)}、最近の生成速度 "
            f"{self.worker.recent_tokens_per_second():.1f} トークン/秒",
            f"待ち行列: {self.worker.queue_depth} 件（同時生成 最大 {self.worker.max_batch_size}）、生成したトークン累計 {self.worker.tokens_generated}",
            f"このチャンネル: ペルソナ {persona}、会話のメッセージ {messages} 件",
        ]
        if model is not None:
            lines.append("次の返事の生成設定:")
            lines += setup.sampling(model).describe()
        return "\n".join(lines)


# --- the table -------------------------------------------------------------------------------


async def _help(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    return CommandReply(help_text(caller.prefix))


async def _status(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    return CommandReply(await admin.status(caller.key))


async def _stop(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    return CommandReply(admin.stop(caller.key, whole_channel=caller.whole_channel))


async def _reset(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    if caller.whole_channel and not caller.is_dm:
        return CommandReply(THREADED_RESET_TEXT)
    text = await admin.reset(caller.key, is_admin=caller.is_admin, is_dm=caller.is_dm)
    return CommandReply(text, public=True)


async def _persona(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    if not argument:
        return CommandReply(admin.list_personas(f"{caller.prefix}persona"))
    return CommandReply(await admin.set_persona(caller.key, argument), public=True)


async def _model(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    if not argument:
        return CommandReply(await admin.model_usage(f"{caller.prefix}model"))
    return CommandReply(await admin.set_model(argument), public=True)


async def _set(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    setting, value = first_word(argument)
    if setting.lower() == "clear" and not value:
        return CommandReply(await admin.clear_sampling(caller.key), public=True)
    return await _sampling(admin, caller, setting, value)


async def _temperature(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    return await _sampling(admin, caller, "temperature", argument)


async def _length(admin: AdminService, caller: Caller, argument: str) -> CommandReply:
    return await _sampling(admin, caller, "max_new_tokens", argument)


async def _sampling(admin: AdminService, caller: Caller, setting: str, value: str) -> CommandReply:
    if not setting or not value:
        names = "、".join(SamplingParams().as_dict())
        return CommandReply(
            f"使い方: {caller.prefix}set <項目> <値>（項目: {names}）、"
            f"{caller.prefix}set clear で元に戻します。"
        )
    return CommandReply(await admin.set_sampling(caller.key, setting, value), public=True)


COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Command(
            "reset",
            "この会話を新しく始めます（履歴は保存されたまま使われなくなります。DM 以外では管理者のみ）",
            _reset,
            who="reset",
            waits=True,  # a reply in progress is stored first
        ),
        Command("stop", "このチャンネルで生成中の返事を止めます", _stop),
        Command("status", "モデルと、このチャンネルの設定を表示します", _status),
        Command(
            "persona",
            "ペルソナの一覧を表示、名前を付けるとこのチャンネルのペルソナを切り替えます（管理者のみ。none で解除）",
            _persona,
            (Arg("name", "名前", choices="personas", detail="ペルソナの名前（none で解除）"),),
            who="admin_to_change",
            waits=True,  # an adapter persona is checked against the model on its worker
        ),
        Command(
            "model",
            "モデルを切り替えます（管理者のみ。demo、Hugging Face の ID、フォルダのパス）",
            _model,
            (
                Arg(
                    "name",
                    "名前",
                    choices="models",
                    detail="demo、Hugging Face の ID、またはフォルダのパス",
                ),
            ),
            who="admin_to_change",
            progress="モデルを読み込んでいます…",
            waits=True,
        ),
        Command(
            "set",
            "このチャンネルの生成設定を変えます（管理者のみ。例: set temperature 0.5、set clear で元に戻す）",
            _set,
            (
                Arg("setting", "項目", choices="settings", detail="生成設定の名前、または clear"),
                Arg("value", "値"),
            ),
            who="admin_to_change",
        ),
        Command(
            "temperature",
            "このチャンネルの temperature を変えます（管理者のみ。0 で毎回同じ返事、大きいほど自由）",
            _temperature,
            (Arg.setting("temperature", "value", "値", "ランダムさ（0 で毎回同じ返事）"),),
            who="admin_to_change",
        ),
        Command(
            "length",
            "このチャンネルの返事の最大の長さを変えます（管理者のみ）",
            _length,
            (Arg.setting("max_new_tokens", "tokens", "トークン数", "返事の最大の長さ"),),
            who="admin_to_change",
        ),
        Command("help", "この説明を表示します", _help),
    )
}


def help_text(prefix: str = "/", commands: dict[str, Command] | None = None) -> str:
    """Every command with its arguments and one line, as typed with `prefix`."""
    lines = ["使えるコマンド:"]
    for command in (commands or COMMANDS).values():
        lines.append(f"{command.usage(prefix)} — {command.help}")
    return "\n".join(lines)


def first_word(text: str) -> tuple[str, str]:
    """`"temperature 0.5"` -> `("temperature", "0.5")`, split at any whitespace: Japanese input
    methods type a full-width space."""
    parts = text.split(maxsplit=1)
    return (parts[0] if parts else ""), (parts[1].strip() if len(parts) > 1 else "")


def _device_line(model: LoadedModel) -> str:
    """What the engine knows of where the model runs; what it does not know (a server keeps it
    to itself) is said to be the server's."""
    if model.device is None and model.dtype is None and model.parameters is None:
        return "デバイス・精度・パラメータ数: サーバー側"
    unknown = "不明（サーバー側）"
    quantized = "" if model.quantization == "none" else f"、量子化 {model.quantization}"
    size = unknown if model.parameters is None else f"{model.parameters / 1e6:,.1f}M"
    return (
        f"デバイス: {model.device or unknown}、精度 {model.dtype or unknown}{quantized}、"
        f"パラメータ {size}"
    )
