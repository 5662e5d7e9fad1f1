"""The base of the engines that generate token ids (llama.cpp, OpenAI-compatible servers).

Such an engine implements `load`, `generate_ids`, `release`, `info`; the text side is shared and
lives here: decoding each row's ids with the bot's own tokenizer, watching for stop strings (an
invented next turn), each row's token limit, cancellation and deadline, and building the
results. It mirrors what `bot.engines.transformers.batch.BatchStreamer` does for transformers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from bot.engines.contract import (
    EngineInfo,
    LoadedModel,
    Row,
    RowOutcome,
)
from bot.engines.memory import process_memory
from bot.engines.row_state import RowState, row_result
from bot.errors import GENERIC_FAILURE_REPLY, AdapterMismatch, GenerationFailed, UserFacingError
from bot.models.sampling import SamplingParams
from bot.models.tokenizers import IncrementalDecoder

log = logging.getLogger(__name__)

# How a row ended, as an engine reports it. The text side adds "stop" (a stop string),
# "cancelled" and "timeout", which it decides itself through `RowSink`.
EngineFinish = Literal["eos", "length", "stopped", "error"]


@dataclass(frozen=True)
class RowRequest:
    """One row to generate: the prompt's token ids and that row's own sampling."""

    ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int] = frozenset()  # ending tokens (end of text); not streamed
    adapter: str | None = None  # a persona's LoRA adapter, by name


@dataclass
class RowEnd:
    """How one row ended. `error` is set (and `finish` is "error") when this row alone failed:
    the other rows of the batch are unaffected."""

    finish: EngineFinish
    error: BaseException | None = None


class RowSink(Protocol):
    """Where an engine sends each row's output; the bot's side decides when a row is done."""

    def token(self, row: int, token_id: int) -> bool:
        """A new token of `row`; False means the row is done (stop string, its token limit)."""
        ...

    def text(self, row: int, text: str) -> bool:
        """New text of `row`, for servers that return no token ids; False means done."""
        ...

    def done(self, row: int) -> bool:
        """True once the row was cancelled or ran past its deadline. Engines poll it between
        steps (and while waiting on a server) so a cancelled row stops within a token."""
        ...


class TokenEngine:
    """See the module's docstring. Subclasses set `name` and `model_hint`."""

    name = "token"
    model_hint = ""

    def generate_ids(
        self, model: LoadedModel, rows: Sequence[RowRequest], sink: RowSink
    ) -> list[RowEnd]:
        """Generate every row until it ends (a stop id, `params.max_new_tokens`, `sink` says
        done). Rows are generated together where the engine can; a failure confined to one row
        is that row's `RowEnd.error`, not an exception."""
        raise NotImplementedError

    def generate(self, model: LoadedModel, rows: Sequence[Row]) -> list[RowOutcome]:
        """Generate a batch through `generate_ids`: each row's result, or the error to answer
        that row with (a row that failed alone; the others finish normally)."""
        started = time.monotonic()
        states = [
            TextRow(
                row,
                started + row.timeout_s,
                IncrementalDecoder(model.tokenizer),
                stops=(*row.prompt.stop_strings, "</s>"),
            )
            for row in rows
        ]
        requests = [
            RowRequest(r.prompt.ids, r.prompt.params, r.stop_ids, r.prompt.adapter) for r in rows
        ]
        outcomes = self.generate_ids(model, requests, TextSink(states))
        ended = time.monotonic()
        return [
            _result(model, state, end, started, ended, len(states))
            for state, end in zip(states, outcomes, strict=True)
        ]

    def release(self, model: LoadedModel) -> None:
        model.model = None

    def info(self, model: LoadedModel) -> EngineInfo:
        return EngineInfo(self.name)

    def memory(self, model: LoadedModel | None) -> str:
        return process_memory()

    def available(self) -> list[str] | None:
        return None

    def check_adapter(
        self, model: LoadedModel, name: str, folder: Path, base_models: tuple[str, ...]
    ) -> None:
        if not self.adapter_available(model, name):
            raise AdapterMismatch(self.adapter_refusal(name))

    def adapter_available(self, model: LoadedModel, adapter: str) -> bool:
        """Whether rows may name the LoRA adapter `adapter` (engines apply it by name)."""
        return False

    def adapter_refusal(self, adapter: str) -> str:
        """Why a persona's adapter cannot be used, for the user (Japanese)."""
        return (
            f"ペルソナ「{adapter}」の LoRA アダプターはこのエンジン（{self.name}）では使えません。"
        )


@dataclass
class TextRow(RowState):
    """One request inside a token engine's batch."""

    text: str = ""  # for servers that stream text instead of ids

    @property
    def reply(self) -> str:
        return self.text or self.decoder.text


class TextSink:
    """A `RowSink` over the batch's rows."""

    def __init__(self, rows: Sequence[TextRow]) -> None:
        self.rows = rows

    def token(self, row: int, token_id: int) -> bool:
        r = self.rows[row]
        if r.finish_reason is not None:
            return False
        r.first_token_at = r.first_token_at or time.monotonic()
        r.new_tokens += 1
        if token_id in r.row.stop_ids:
            r.finish("eos")
            return False
        return self._delta(r, r.decoder.push(token_id), r.decoder.text)

    def text(self, row: int, text: str) -> bool:
        r = self.rows[row]
        if r.finish_reason is not None:
            return False
        r.first_token_at = r.first_token_at or time.monotonic()
        r.new_tokens += 1  # a server's text chunk is about one token
        r.text += text
        return self._delta(r, text, r.text)

    def _delta(self, r: TextRow, delta: str, whole: str) -> bool:
        if delta:
            r.output.emit(delta)
            tail = whole[-(len(delta) + max(map(len, r.stops)) + 1) :]
            if any(stop in tail for stop in r.stops):
                r.finish("stop")
                return False
        if r.new_tokens >= r.prompt.params.max_new_tokens:
            r.finish("length")
            return False
        return True

    def done(self, row: int) -> bool:
        return self.rows[row].check_deadline(time.monotonic())


def _result(
    model: LoadedModel,
    row: TextRow,
    outcome: RowEnd,
    started: float,
    ended: float,
    batch_size: int,
) -> RowOutcome:
    if outcome.error is not None:
        error = outcome.error
        if isinstance(error, UserFacingError):
            return error
        log.error("a row failed: %s", error, exc_info=error)
        return GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(error))
    if outcome.finish == "eos":
        row.finish("eos")
    row.finish("length")  # the engine stopped the row at its token limit
    return row_result(row, row.reply, model.name, started, ended, batch_size)
