"""The text side of token engines: turn each row's token ids into streamed text and a result.

Engines report token ids (or, for servers that return none, text); this module decodes them
with the bot's own tokenizer, watches for stop strings (an invented next turn), each row's token
limit, cancellation and deadline, and builds the `GenerationResult`s the worker hands back.
It mirrors what `bot.batch_generation.BatchStreamer` does for the transformers engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.engines import RowEnd, RowRequest, stop_ids_for
from bot.errors import GENERIC_FAILURE_REPLY, GenerationFailed, UserFacingError
from bot.tokenizer import IncrementalDecoder
from bot.worker_types import BatchRow, row_result

if TYPE_CHECKING:
    from bot.batch_generation import RowOutcome
    from bot.engines import TokenEngine
    from bot.model_loader import LoadedModel
    from bot.worker_types import GenerationHandle, PreparedPrompt

log = logging.getLogger(__name__)


@dataclass
class TextRow(BatchRow):
    """One request inside a token engine's batch."""

    text: str = ""  # for servers that stream text instead of ids
    stop_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def output(self) -> str:
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
        if token_id in r.stop_ids:
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
            r.handle.emit(delta)
            tail = whole[-(len(delta) + max(map(len, r.stops)) + 1) :]
            if any(stop in tail for stop in r.stops):
                r.finish("stop")
                return False
        if r.new_tokens >= r.prepared.params.max_new_tokens:
            r.finish("length")
            return False
        return True

    def done(self, row: int) -> bool:
        r = self.rows[row]
        if r.finish_reason is None:
            if r.handle.cancel_event.is_set():
                r.finish("cancelled")
            elif time.monotonic() > r.deadline:
                r.finish("timeout")
        return r.finish_reason is not None


def run_rows(
    engine: TokenEngine,
    model: LoadedModel,
    prepared: Sequence[PreparedPrompt],
    handles: Sequence[GenerationHandle],
    submitted: Sequence[float],
    timeouts: Sequence[float],
) -> list[RowOutcome]:
    """Generate a batch through `engine.generate_ids`: each row's result, or the error to
    answer that row with (a row that failed alone; the others finish normally)."""
    started = time.monotonic()
    stop_ids = stop_ids_for(model)
    rows = [
        TextRow(
            p,
            h,
            s,
            started + t,
            IncrementalDecoder(model.tokenizer),
            stops=(*p.stop_strings, "</s>"),
            stop_ids=stop_ids,
        )
        for p, h, s, t in zip(prepared, handles, submitted, timeouts, strict=True)
    ]
    requests = [RowRequest(p.ids, p.params, stop_ids, p.adapter) for p in prepared]
    outcomes = engine.generate_ids(model, requests, TextSink(rows))
    ended = time.monotonic()
    return [
        _result(model, row, end, started, ended, len(rows))
        for row, end in zip(rows, outcomes, strict=True)
    ]


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
    return row_result(row, row.output, model.name, started, ended, batch_size)
