"""What both batch paths (transformers' `generate`, the token engines) keep per row while it
generates: its counts, timings, decoded text and how it finished; and the result built from
them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.engines.contract import GenerationResult, PreparedPrompt, Row, RowOutput
from bot.models.tokenizers import IncrementalDecoder


@dataclass
class RowState:
    row: Row
    deadline: float
    decoder: IncrementalDecoder
    stops: tuple[str, ...] = ()
    new_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def prompt(self) -> PreparedPrompt:
        return self.row.prompt

    @property
    def output(self) -> RowOutput:
        return self.row.output

    def finish(self, reason: str) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
            self.finished_at = time.monotonic()

    def check_deadline(self, now: float) -> bool:
        """Finish a row that was cancelled or ran past its deadline; True once it is done."""
        if self.finish_reason is None:
            if self.output.cancel_event.is_set():
                self.finish("cancelled")
            elif now > self.deadline:
                self.finish("timeout")
        return self.finish_reason is not None


def row_result(
    state: RowState, text: str, model_name: str, started: float, ended: float, batch_size: int
) -> GenerationResult:
    """A finished row's result: its text, counts and timings (queue wait, time to the first
    token, generation) measured from the batch's start `started` and end `ended`."""
    first = state.first_token_at or ended
    done = state.finished_at or ended
    return GenerationResult(
        raw_text=text,
        finish_reason=state.finish_reason or "length",
        prompt_tokens=len(state.prompt.ids),
        new_tokens=state.new_tokens,
        stop_strings=state.prompt.stop_strings,
        turns_used=state.prompt.turns_used,
        model_name=model_name,
        queue_wait_s=started - state.row.submitted,
        prompt_s=first - started,
        generation_s=done - first,
        batch_size=batch_size,
    )
