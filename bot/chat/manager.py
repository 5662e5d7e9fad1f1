"""The conversation manager: one path from an incoming message to a finished reply.

Messages of one conversation are handled in order (a lock per conversation); different
conversations proceed in parallel and meet only in the model worker's queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.chat.commands import AdminService
from bot.chat.effective_settings import ChannelSetup, SettingsResolver
from bot.chat.locks import InFlight, KeyedLocks
from bot.chat.ports import NoObserver, Persona, Personas, ReplyObserver
from bot.chat.postprocess import FALLBACK_REPLY, clean_partial, clean_reply
from bot.chat.prompt import build_prompt
from bot.chat.rate_limit import RateLimiter
from bot.chat.replies import SHUTDOWN_NOTE, SHUTTING_DOWN_REPLY, Replies
from bot.engines.contract import GenerationResult, LoadedModel, PreparedPrompt
from bot.errors import GENERIC_FAILURE_REPLY, InvalidMessage, ShuttingDown, UserFacingError
from bot.messages import ConversationKey, IncomingMessage, ReplySink
from bot.models.prompt_formats import (
    PERSONA_FORMATS,
    PromptFormat,
    Turn,
    clean_control_chars,
    strip_invisible,
)
from bot.serving.worker import ModelWorker
from bot.storage.db_thread import DatabaseThread
from bot.storage.repository import Repository, StoredMessage

log = logging.getLogger(__name__)
replies_log = logging.getLogger("bot.replies")

HISTORY_FETCH_LIMIT = 400  # more than any 2048-token window can hold
_NOTES = {
    "timeout": "（時間がかかりすぎたため途中で止めました）",
    "cancelled": "（/stop で止めました）",
}


@dataclass(frozen=True)
class ManagerLimits:
    max_message_chars: int = 4000
    generation_timeout_s: float = 120.0
    stream_update_interval_s: float = 0.2


class ConversationManager:
    def __init__(
        self,
        *,
        repository: Repository,
        db: DatabaseThread,
        worker: ModelWorker,
        personas: Personas,
        admin: AdminService,
        limits: ManagerLimits,
        locks: KeyedLocks,
        in_flight: InFlight,
        rate_limiter: RateLimiter,
        resolver: SettingsResolver,
        observer: ReplyObserver | None = None,
        replies: Replies | None = None,
    ) -> None:
        self.repository = repository
        self.db = db
        self.worker = worker
        self.personas = personas
        self.admin = admin
        self.limits = limits
        self._locks = locks
        self._in_flight = in_flight
        self._rate_limiter = rate_limiter
        self.resolver = resolver  # the same one /status uses
        self._observer = observer or NoObserver()
        self.replies = replies or Replies()

    async def handle(self, message: IncomingMessage, sink: ReplySink) -> None:
        """Answer one message through `sink`. Never raises: every failure becomes a reply.
        While the bot shuts down, new messages are turned away (see bot/app/lifecycle.py)."""
        if self.replies.closing:
            await self.turn_away(message.key.platform, sink)
            return
        with self.replies.track():
            await self._handle(message, sink)

    async def turn_away(self, platform: str, sink: ReplySink) -> None:
        """Answer a message that arrived while shutting down (counted as a refusal)."""
        self._observer.received(platform)
        self._observer.refused(platform, ShuttingDown(SHUTTING_DOWN_REPLY))
        await sink.finish(SHUTTING_DOWN_REPLY)

    async def _handle(self, message: IncomingMessage, sink: ReplySink) -> None:
        # A message of invisible characters alone is empty; they are not stored.
        text = strip_invisible(clean_control_chars(message.text)).strip()
        platform, started = message.key.platform, time.monotonic()
        self._observer.received(platform)
        try:
            if self.admin.is_command(text):
                await sink.finish(await self.admin.run_text_command(message, text))
                return
            if message.rate_limited:
                self._rate_limiter.check(f"{message.key.platform}:{message.author_id}")
            async with self._locks.hold(message.key):
                result = await self._chat(message, text, sink)
            self._observer.replied(platform, result, time.monotonic() - started)
        except UserFacingError as exc:
            self._observer.refused(platform, exc)
            await sink.finish(exc.user_message)
        except Exception:
            self._observer.failed(platform)
            log.exception("failed to answer a message in %s", message.key)
            await sink.finish(GENERIC_FAILURE_REPLY)

    def _validate(self, text: str) -> None:
        if not text:
            raise InvalidMessage("メッセージが空です。話しかけたいことを書いて送ってください。")
        limit = self.limits.max_message_chars
        if len(text) > limit:
            raise InvalidMessage(
                f"メッセージが長すぎます（{len(text):,}文字）。{limit:,}文字以内に分けて送ってください。"
            )

    async def _chat(self, message: IncomingMessage, text: str, sink: ReplySink) -> GenerationResult:
        self._validate(text)
        key = message.key
        with self.worker.arriving() as submit:
            channel = await self.db(self.repository.channel_settings, key)
            setup = self.resolver.setup(channel)
            persona = setup.persona
            preamble = persona.preamble if persona else ""
            self._check_fits(text, message.author_name, preamble, setup)
            conversation_id, history = await self.db(
                self.repository.add_user_message,
                key,
                author_id=message.author_id,
                author_name=message.author_name,
                text=text,
                history_limit=HISTORY_FETCH_LIMIT,
            )
            builder = _prompt_builder(history, preamble, setup)
            handle = submit(builder, timeout_s=self.limits.generation_timeout_s)
        self._in_flight.add(key, handle)
        raw = ""
        try:
            if handle.position >= self.worker.max_batch_size:
                await sink.update(f"（順番待ちです。前に {handle.position} 件あります）")
            stops, last_update = self._stops(persona), 0.0
            specials = self._special_tokens()
            async for delta in handle.deltas():
                raw += delta
                # Cleaning is linear in the text so far: do it at a steady pace, not per token.
                now = time.monotonic()
                if now - last_update < self.limits.stream_update_interval_s:
                    continue
                last_update = now
                partial = clean_partial(raw, stops, special_tokens=specials)
                if partial:
                    await sink.update(partial)
            result = await handle.result()
        except asyncio.CancelledError:
            handle.cancel()
            raise
        finally:
            self._in_flight.discard(key, handle)
        stopped_early = result.finish_reason in ("length", "timeout", "cancelled")
        reply = clean_reply(
            result.raw_text,
            result.stop_strings,
            hit_token_limit=stopped_early,
            special_tokens=specials,
        )
        if reply != FALLBACK_REPLY:  # what people saw becomes history; notes below do not
            await self.db(
                self.repository.add_message,
                conversation_id,
                role="assistant",
                author_id="bot",
                author_name="bot",
                text=reply,
            )
        note = _NOTES.get(result.finish_reason)
        if result.finish_reason == "cancelled" and self.replies.closing:
            note = SHUTDOWN_NOTE
        if note:
            reply = note if reply == FALLBACK_REPLY else f"{reply}\n{note}"
        _log_reply(key, result, persona.name if persona else "")
        await sink.finish(reply)
        return result

    def _special_tokens(self) -> frozenset[str]:
        current = self.worker.current
        return current.tokenizer.special_tokens if current else frozenset()

    def _stops(self, persona: Persona | None) -> tuple[str, ...]:
        current = self.worker.current
        return _format(current, persona).stop_strings if current else ()

    def _check_fits(self, text: str, author: str, preamble: str, setup: ChannelSetup) -> None:
        """Refuse, before storing it, a message that alone would not fit the context window,
        blaming the message only when it is the message that is too long."""
        model = self.worker.current
        if model is None:
            return  # the worker answers with a clear "not loaded" error
        budget = model.context_length - setup.sampling(model).params.max_new_tokens
        fmt = _format(model, setup.persona)
        turn = [Turn("user", text, author)]

        def fits(with_preamble: str) -> bool:
            built = build_prompt(
                fmt,
                turn,
                encode=model.tokenizer.encode,
                budget=budget,
                preamble=with_preamble,
                special_tokens=model.tokenizer.special_tokens,
            )
            return built is not None

        if fits(preamble):
            return
        if not fits(""):
            raise InvalidMessage(
                "メッセージが長すぎて、このモデルが一度に読める長さを超えています。"
                "短く分けて送ってください。"
            )
        name = setup.persona.name if setup.persona else ""
        raise InvalidMessage(
            f"このチャンネルのペルソナ「{name}」の前置きが長く、メッセージと合わせるとこのモデルが"
            "一度に読める長さを超えます。短く分けて送るか、管理者に /persona で別のペルソナに"
            "してもらってください。"
        )


def _format(model: LoadedModel, persona: Persona | None) -> PromptFormat:
    """An adapter persona speaks the template it was trained on; others the model's own."""
    if persona is not None and persona.adapter is not None and persona.prompt_format:
        if persona.prompt_format == model.prompt_format.name:
            return model.prompt_format  # "plain" is written with the model's own newlines
        return PERSONA_FORMATS.get(persona.prompt_format, model.prompt_format)
    return model.prompt_format


def _prompt_builder(
    history: list[StoredMessage], preamble: str, setup: ChannelSetup
) -> Callable[[LoadedModel], PreparedPrompt]:
    persona = setup.persona
    turns = [
        Turn("user" if m.role == "user" else "assistant", m.text, m.author_name) for m in history
    ]

    def build(model: LoadedModel) -> PreparedPrompt:
        params = setup.sampling(model).params  # the model serving now, as /status shows it
        budget = model.context_length - params.max_new_tokens
        fmt = _format(model, persona)
        built = build_prompt(
            fmt,
            turns,
            encode=model.tokenizer.encode,
            budget=budget,
            preamble=preamble,
            special_tokens=model.tokenizer.special_tokens,
        )
        if built is None:
            raise InvalidMessage(
                "メッセージが長すぎて、このモデルが一度に読める長さを超えています。"
            )
        adapter = persona.adapter if persona is not None else None
        return PreparedPrompt(
            built.token_ids,
            fmt.stop_strings,
            params,
            built.turns_used,
            adapter=persona.name if persona is not None and adapter is not None else None,
            adapter_dir=adapter,
            adapter_bases=persona.base_models if persona is not None else (),
        )

    return build


def _log_reply(key: ConversationKey, result: GenerationResult, persona: str) -> None:
    replies_log.info(
        "reply conversation=%s model=%s persona=%s turns=%d prompt_tokens=%d new_tokens=%d "
        "finish=%s batch=%d queue_ms=%.0f prompt_ms=%.0f generation_ms=%.0f tokens_per_s=%.1f",
        key,
        result.model_name,
        persona or "-",
        result.turns_used,
        result.prompt_tokens,
        result.new_tokens,
        result.finish_reason,
        result.batch_size,
        result.queue_wait_s * 1000,
        result.prompt_s * 1000,
        result.generation_s * 1000,
        result.new_tokens / result.generation_s if result.generation_s > 0 else 0.0,
    )
