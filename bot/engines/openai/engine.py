"""`ENGINE=openai`: generate on an OpenAI-compatible server (vLLM, llama.cpp server, Ollama,
LM Studio, `transformers serve`) through streamed `/v1/completions`.

The prompt is sent as the token ids the bot built and the reply comes back as token ids
(`return_token_ids`, vLLM started with `--skip-tokenizer-init`), decoded by the bot: the server's
tokenizer never touches the text. A server that refuses id prompts or returns no ids (Ollama,
LM Studio) gets the formatted text and streams text back; the log and /status say that the
server's tokenizer is used then.

Each row is one request on its own connection, read by a thread of its own; the server batches
them (vLLM's continuous batching). Cancelling a row closes its connection, which vLLM takes as
an abort.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.engines.contract import EngineInfo, LoadedModel, LoadOptions
from bot.engines.openai.client import (
    CompletionStream,
    ServerConfig,
    ServerError,
    ServerUnavailable,
    list_models,
    with_retries,
)
from bot.engines.token_engine import RowEnd, RowRequest, RowSink, TokenEngine
from bot.errors import GenerationFailed, ModelLoadError
from bot.models.facts import bare_facts, context_length, folder_facts
from bot.models.hub import resolve_folder
from bot.models.tokenizers import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

SERVER_DOWN_REPLY = (
    "モデルのサーバーに接続できませんでした。サーバーが動いているか確かめて、"
    "少し時間をおいてからもう一度話しかけてください（メッセージは保存されています）。"
)
SERVER_LOST_REPLY = "返事の途中でモデルのサーバーとの接続が切れました。もう一度話しかけてください。"
SERVER_REFUSED_REPLY = "モデルのサーバーが返事の生成を断りました（{detail}）。"
SERVER_TOKENIZER_NOTE = "サーバー側のトークナイザーを使用（トークン ID を送れないサーバー）"
_POLL_S = 0.05


class CharTokenizer:
    """For a server whose model the bot has no tokenizer files for: one "id" per character,
    so prompts are built and budgeted in characters (a Japanese token is rarely shorter than
    a character) and sent as text."""

    eos_id: int | None = None
    pad_id: int | None = None
    bos_id: int | None = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if 0 <= i < 0x110000)

    def has_piece(self, piece: str) -> bool:
        return False


@dataclass
class ServedModel:
    """The engine's handle in `LoadedModel.model`."""

    config: ServerConfig
    server_model: str  # the name the server serves it under
    adapters: frozenset[str]  # other names the server serves (vLLM `--lora-modules`)
    text_mode: bool  # True: the server's tokenizer is used (no id prompts)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class OpenAIOptions:
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = field(default=None, repr=False)
    tokenizer: str = ""  # folder, hub id or catalogue name of the served model's tokenizer
    retries: int = 3
    backoff_s: float = 0.5
    load: LoadOptions = field(default_factory=LoadOptions)


class OpenAIEngine(TokenEngine):
    name = "openai"
    model_hint = "サーバーが提供しているモデルの名前"

    def __init__(self, options: OpenAIOptions) -> None:
        self.options = options
        self.config = ServerConfig(
            options.base_url,
            options.api_key,
            retries=options.retries,
            backoff_s=options.backoff_s,
        )

    # --- loading -------------------------------------------------------------------------

    def _models(self) -> list[dict[str, Any]]:
        """The server's `/v1/models` entries; ModelLoadError saying so if it cannot be reached."""
        try:
            return list_models(self.config)
        except (ServerUnavailable, ServerError, ValueError) as exc:
            raise ModelLoadError(
                f"モデルのサーバー {self.config.base_url} に接続できません。"
                "OPENAI_BASE_URL とサーバーが動いているかを確かめてください。",
                detail=str(exc),
            ) from exc

    def available(self) -> list[str] | None:
        """The model names the server offers (for `/model` with no name)."""
        return [str(m.get("id")) for m in self._models()]

    def load(self, spec: str) -> LoadedModel:
        entries = self._models()
        names = [str(e.get("id")) for e in entries]
        if spec not in names:
            offered = "、".join(names) or "（なし）"
            raise ModelLoadError(
                f"サーバーにモデル「{spec}」はありません。サーバーが提供しているモデル: {offered}"
            )
        entry = next(e for e in entries if e.get("id") == spec)
        tokenizer, folder = self._tokenizer(spec)
        text_mode = isinstance(tokenizer, CharTokenizer)
        if text_mode:
            log.warning(
                "no tokenizer files for %s here (set OPENAI_TOKENIZER to its folder): prompts "
                "are sent as text and the server's tokenizer is used",
                spec,
            )
        setting = self.options.load.prompt_format
        if folder is not None:
            facts = folder_facts(spec, folder, tokenizer, setting)
        else:
            facts = bare_facts(tokenizer, setting)
        served_context = int(entry["max_model_len"]) if entry.get("max_model_len") else None
        context = context_length(facts.context_length, served_context)
        # vLLM lists each `--lora-modules` adapter as a model whose parent is the base model.
        adapters = frozenset(str(e.get("id")) for e in entries if e.get("parent") == spec)
        log.info(
            "serving %s from %s (%s, context %d, format %s)",
            spec,
            self.config.base_url,
            "text prompts" if text_mode else "token-id prompts",
            context,
            facts.prompt_format.name,
        )
        return LoadedModel(
            name=spec,
            folder=folder,
            model=ServedModel(self.config, spec, adapters, text_mode),
            tokenizer=tokenizer,
            prompt_format=facts.prompt_format,
            context_length=context,
            is_demo=facts.is_demo,
            sampling_defaults=facts.sampling_defaults,
            format_reason=facts.reason,
        )

    def _tokenizer(self, spec: str) -> tuple[Tokenizer, Path | None]:
        """The bot's own tokenizer for the served model: OPENAI_TOKENIZER, else the model name
        itself when it is a folder, a catalogue name or a cached hub id (vLLM names a model by
        the path or hub id it was started with)."""
        for name in (self.options.tokenizer, spec):
            if not name:
                continue
            try:
                load = self.options.load
                folder = resolve_folder(name, load.cache_dir, load.hf_token)
                return load_tokenizer(folder), folder
            except Exception as exc:  # any failure here means: no local tokenizer
                log.debug("no local tokenizer from %r: %s", name, exc)
                if name == self.options.tokenizer:
                    raise ModelLoadError(
                        f"OPENAI_TOKENIZER={name} のトークナイザーを読み込めませんでした。"
                        "モデルのフォルダのパスを指定してください。",
                        detail=str(exc),
                    ) from exc
        return CharTokenizer(), None

    def info(self, model: LoadedModel) -> EngineInfo:
        served: ServedModel = model.model
        note = SERVER_TOKENIZER_NOTE if served.text_mode else ""
        return EngineInfo(self.name, f"サーバー {served.config.base_url}", note)

    def memory(self, model: LoadedModel | None) -> str:
        return "サーバー側"

    def adapter_refusal(self, adapter: str) -> str:
        return (
            f"ペルソナ「{adapter}」の LoRA アダプターはモデルのサーバーにありません。"
            f"vLLM なら --lora-modules {adapter}=<アダプターのフォルダ> を付けて起動してください。"
        )

    def adapter_available(self, model: LoadedModel, adapter: str) -> bool:
        served: ServedModel = model.model
        return adapter in served.adapters

    # --- generating ------------------------------------------------------------------------

    def generate_ids(
        self, model: LoadedModel, rows: Sequence[RowRequest], sink: RowSink
    ) -> list[RowEnd]:
        served: ServedModel = model.model
        events: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        outcomes: list[RowEnd | None] = [None] * len(rows)
        streams: list[_RowStream | None] = []
        for i, row in enumerate(rows):
            try:
                body = self._body(model, served, row, text=served.text_mode)
            except GenerationFailed as exc:  # this row's persona cannot be served
                outcomes[i] = RowEnd("error", exc)
                streams.append(None)
                continue
            fallback = None if served.text_mode else self._body(model, served, row, text=True)
            streams.append(_RowStream(i, body, fallback, served.config, events))
        for stream in streams:
            if stream is not None:
                stream.start()
        live = {i for i, s in enumerate(streams) if s is not None}
        while live:
            for i in list(live):
                if sink.done(i):
                    _close(streams[i])
                    outcomes[i] = RowEnd("stopped")
                    live.discard(i)
            try:
                i, kind, value = events.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if i not in live:
                continue
            if kind == "fallback":
                if not served.text_mode:
                    log.warning(
                        "%s refused a token-id prompt (%s): sending text from now on; the "
                        "server's tokenizer is used",
                        served.config.base_url,
                        value,
                    )
                served.text_mode = True
            elif kind == "ids":
                for token_id in value:
                    if token_id in rows[i].stop_ids:
                        outcomes[i] = RowEnd("eos")
                        break
                    if not sink.token(i, token_id):
                        outcomes[i] = RowEnd("stopped")
                        break
            elif kind == "text":
                if not sink.text(i, value):
                    outcomes[i] = RowEnd("stopped")
            elif kind == "end":
                outcomes[i] = RowEnd("eos" if value == "stop" else "length")
            elif kind == "error":
                outcomes[i] = RowEnd("error", _user_error(value, streams[i].received))
            if outcomes[i] is not None:
                _close(streams[i])
                live.discard(i)
        return [o or RowEnd("stopped") for o in outcomes]

    def _body(
        self, model: LoadedModel, served: ServedModel, row: RowRequest, *, text: bool
    ) -> dict[str, Any]:
        p = row.params
        body: dict[str, Any] = {
            "model": served.server_model,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p if p.temperature > 0 else 1.0,
            "stream": True,
        }
        if row.adapter:
            if row.adapter not in served.adapters:
                raise GenerationFailed(self.adapter_refusal(row.adapter))
            body["model"] = row.adapter
        # vLLM's own fields; OpenAI's API ignores unknown ones or refuses them (then: text mode).
        body["top_k"] = p.top_k if p.top_k > 0 and p.temperature > 0 else -1
        body["repetition_penalty"] = p.repetition_penalty
        if text:
            body["prompt"] = model.tokenizer.decode(row.ids)
        else:
            body["prompt"] = row.ids
            body["return_token_ids"] = True
            body["stop_token_ids"] = sorted(row.stop_ids)
        return body


class _RowStream:
    """Reads one row's stream on its own thread and posts ("ids", [...]), ("text", str),
    ("end", finish_reason) or ("error", exc) to the shared queue."""

    def __init__(
        self,
        index: int,
        body: dict[str, Any],
        fallback: dict[str, Any] | None,
        config: ServerConfig,
        events: queue.Queue[tuple[int, str, Any]],
    ) -> None:
        self.index = index
        self.body = body
        self.fallback = fallback  # the text-prompt request, if the server refuses ids
        self.config = config
        self.events = events
        self.received = False  # any output came back (no retry after that)
        self._stream: CompletionStream | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"openai-row-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            self._stream.close()

    def _run(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            if not self._closed.is_set():
                self.events.put((self.index, "error", exc))

    def _read(self) -> None:
        def attempt(body: dict[str, Any]) -> CompletionStream:
            stream = CompletionStream(self.config, body)
            self._stream = stream
            stream.open()
            return stream

        try:
            stream = with_retries(
                self.config, lambda: attempt(self.body), cancelled=self._closed.is_set
            )
        except ServerError as exc:
            if self.fallback is None or not refuses_token_ids(exc.status, exc.body):
                raise
            self.events.put((self.index, "fallback", str(exc)[:200]))
            stream = with_retries(
                self.config, lambda: attempt(self.fallback or {}), cancelled=self._closed.is_set
            )
        if self._closed.is_set():
            stream.close()
            return
        finish = None
        for choice in stream.chunks():
            ids = choice.get("token_ids")
            if ids:
                self.received = True
                self.events.put((self.index, "ids", list(ids)))
            elif choice.get("text"):
                self.received = True
                self.events.put((self.index, "text", choice["text"]))
            finish = choice.get("finish_reason") or finish
        self.events.put((self.index, "end", finish or "length"))


def refuses_token_ids(status: int, body: str) -> bool:
    """Whether an error answer to a token-id prompt means "this server takes text only".
    Servers say it differently: a 400/422, or (llama-cpp-python's server) a 500 whose body is
    the validation error about `prompt`."""
    if status in (400, 422):
        return True
    return status >= 500 and "prompt" in body.lower() and "valid" in body.lower()


def _close(stream: _RowStream | None) -> None:
    if stream is not None:
        stream.close()


def _user_error(exc: BaseException, received: bool) -> BaseException:
    if isinstance(exc, GenerationFailed):
        return exc
    if isinstance(exc, ServerUnavailable):
        return GenerationFailed(SERVER_DOWN_REPLY, detail=str(exc))
    if isinstance(exc, ServerError):
        return GenerationFailed(
            SERVER_REFUSED_REPLY.format(detail=f"HTTP {exc.status}"), detail=str(exc)
        )
    if isinstance(exc, (ConnectionError, OSError)):
        reply = SERVER_LOST_REPLY if received else SERVER_DOWN_REPLY
        return GenerationFailed(reply, detail=str(exc))
    return exc


def wait_for_server(config: ServerConfig, timeout_s: float) -> list[str]:
    """Poll `/v1/models` until the server answers (tests and `.ci/run` start vLLM with it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            once = ServerConfig(config.base_url, config.api_key, retries=0)
            return [str(m.get("id")) for m in list_models(once)]
        except (ServerUnavailable, ServerError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
