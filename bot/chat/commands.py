"""What the chat commands do (`/reset`, `/model`, `/persona`, `/set`, `/status`, `/help`).

Platforms call these methods from their own slash commands; the console (and any platform
that passes plain text) goes through `run_text_command`. Admin checks live here, in one place.
"""

from __future__ import annotations

import json
import logging
import re

from bot.chat.effective_settings import SettingsResolver, max_reply_tokens
from bot.chat.locks import InFlight, KeyedLocks
from bot.chat.ports import Personas
from bot.engines.contract import LoadedModel
from bot.errors import NotPermitted, shorten
from bot.messages import ConversationKey, IncomingMessage
from bot.models.sampling import SamplingParams, validate_overrides
from bot.serving.worker import ModelWorker
from bot.storage.db_thread import DatabaseThread
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

HELP_TEXT = """\
使えるコマンド:
/reset — このチャンネルの会話を新しく始めます（履歴は保存されたまま使われなくなります。DM 以外では管理者のみ）
/stop — このチャンネルで生成中の返事を止めます
/status — モデルと、このチャンネルの設定を表示します
/persona — ペルソナの一覧を表示します
/persona <名前> — このチャンネルのペルソナを切り替えます（管理者のみ。none で解除）
/model <名前> — モデルを切り替えます（管理者のみ。demo、Hugging Face の ID、フォルダのパス）
/set <項目> <値> — このチャンネルの生成設定を変えます（管理者のみ。例: /set temperature 0.5、/set clear）
/help — この説明を表示します"""

MODEL_CHOICE_KEY = "model_choice"
COMMANDS = ("reset", "stop", "status", "persona", "model", "set", "help")
RESET_ADMIN_ONLY = (
    "みんなで使うチャンネルでは、/reset は管理者だけが使えます（DM ではいつでも使えます）。"
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
        name, argument = parse_command(text) or ("", "")
        key = message.key
        if name not in COMMANDS:
            typed = text.split(maxsplit=1)[0]  # as written, not lower-cased
            return f"「{shorten(typed)}」というコマンドはありません。\n{HELP_TEXT}"
        if name == "reset":
            return await self.reset(key, is_admin=message.is_admin, is_dm=message.is_dm)
        if name == "stop":
            return self.stop(key)
        if name == "status":
            return await self.status(key)
        if name == "help":
            return HELP_TEXT
        if name == "persona" and not argument:
            return self.list_personas()
        self._require_admin(message.is_admin)
        if name == "persona":
            return await self.set_persona(key, argument)
        if name == "model":
            if not argument:
                return await self.model_usage()
            return await self.set_model(argument)
        setting, value = first_word(argument)
        if setting == "clear":
            return await self.clear_sampling(key)
        return await self.set_sampling(key, setting, value)

    @staticmethod
    def _require_admin(is_admin: bool) -> None:
        if not is_admin:
            raise NotPermitted("このコマンドは管理者だけが使えます。")

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

    def stop(self, key: ConversationKey) -> str:
        if self.in_flight.cancel(key):
            return "生成を止めました。"
        return "このチャンネルで生成中の返事はありません。"

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

    async def model_usage(self) -> str:
        """`/model` alone: how to switch, and what a server engine offers."""
        engine = self.worker.engine
        names = await self.worker.call(engine.available)
        if names is None:
            return f"使い方: /model <名前>（{engine.model_hint}）"
        offered = "\n".join(f"・{shorten(n, 200)}" for n in names) or "（なし）"
        return f"使い方: /model <名前>。サーバーが提供しているモデル:\n{offered}"

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
