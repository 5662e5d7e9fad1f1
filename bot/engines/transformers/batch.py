"""Generate replies for several requests in one `generate` call.

Rows are left-padded; each row streams its own text, stops on its own (end-of-text, an invented
next turn, its own token limit, cancellation, timeout) and gets its own result. Runs only on
the model worker's thread.

A failure is kept to the row it belongs to. An error while handling one row's tokens
(decoding, streaming, stop checks) ends that row with the apology; the others go on. An error
from `generate` itself (a CUDA error, out of memory) cannot be pinned to a row: every row that
was still going is run again alone, continuing from the tokens it already has (what its user
has already seen is never taken back or repeated), and only a row that fails alone too is
answered with the error.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.engines.contract import LoadedModel, Row, RowOutcome
from bot.engines.row_state import RowState, row_result
from bot.engines.transformers.lora import BASE
from bot.engines.transformers.per_row import PerRowSampling, shared_generate_kwargs
from bot.errors import (
    GENERIC_FAILURE_REPLY,
    OUT_OF_MEMORY_REPLY,
    GenerationFailed,
    UserFacingError,
)
from bot.models.sampling import SamplingParams
from bot.models.tokenizers import IncrementalDecoder

log = logging.getLogger(__name__)


@dataclass
class BatchRow(RowState):
    """One request inside a `generate` batch; a row may fail alone."""

    error: UserFacingError | None = None

    def fail(self, error: UserFacingError) -> None:
        if self.finish_reason is None:
            self.error = error
            self.finish("error")

    @property
    def remaining(self) -> int:
        return self.prompt.params.max_new_tokens - self.new_tokens


class BatchStreamer:
    """Receives each step's new tokens from `generate` and feeds every live row."""

    def __init__(self, rows: Sequence[BatchRow], eos_id: int | None) -> None:
        self.rows = rows
        self.eos_id = eos_id
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        now = time.monotonic()
        for row, token_id in zip(self.rows, value.reshape(-1).tolist(), strict=True):
            if row.finish_reason is not None:
                continue  # a finished row only receives padding
            try:
                self._feed(row, token_id, now)
            except Exception as exc:
                # A bug or bad data in this row alone: the rest of the batch goes on.
                log.exception("a row of the batch failed; the other rows go on")
                row.fail(GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc)))

    def _feed(self, row: BatchRow, token_id: int, now: float) -> None:
        row.first_token_at = row.first_token_at or now
        row.new_tokens += 1
        if token_id == self.eos_id:
            row.finish("eos")
            return
        delta = row.decoder.push(token_id)
        if delta:
            row.output.emit(delta)
            tail = row.decoder.text[-(len(delta) + max(map(len, row.stops)) + 1) :]
            if any(stop in tail for stop in row.stops):
                row.finish("stop")
        if row.finish_reason is None and row.remaining <= 0:
            row.finish("length")

    def end(self) -> None:
        pass


def _stopping_criteria(rows: Sequence[BatchRow]) -> Any:
    import torch
    from transformers import StoppingCriteria

    class RowsDone(StoppingCriteria):
        """Per-row: a row is done once finished, cancelled or past its deadline."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            done = [row.check_deadline(now) for row in rows]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return RowsDone()


def _sampling_kwargs(params: Sequence[SamplingParams]) -> dict[str, Any]:
    """transformers' own processors when every row samples alike; otherwise each row's own
    settings through PerRowSampling (rows then only share no_repeat_ngram_size)."""
    from transformers import LogitsProcessorList

    first = params[0]
    if all(_sampling_only(p) == _sampling_only(first) for p in params):
        return first.generate_kwargs()
    return {
        **shared_generate_kwargs(),
        "no_repeat_ngram_size": first.no_repeat_ngram_size,
        "logits_processor": LogitsProcessorList([PerRowSampling(params)]),
    }


def _sampling_only(params: SamplingParams) -> SamplingParams:
    return replace(params, max_new_tokens=0)


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def generate_batch(model: LoadedModel, batch: Sequence[Row]) -> list[RowOutcome]:
    """Generate every row; each gets its result or, if it failed, the error to answer it with.
    Rows may differ in token limit, temperature, top-p, top-k and repetition penalty (see
    `_sampling_kwargs`) and adapter; they must share the rest."""
    started = time.monotonic()
    tokenizer = model.tokenizer
    rows = [
        BatchRow(
            row,
            started + row.timeout_s,
            IncrementalDecoder(tokenizer),
            stops=(*row.prompt.stop_strings, "</s>"),
        )
        for row in batch
    ]
    peft = _is_peft(model.model)
    wanted = {row.prompt.adapter for row in batch if row.prompt.adapter}
    loaded = set(model.model.peft_config) if peft else set()
    if wanted - loaded:  # never answer a persona's row with the wrong weights
        raise RuntimeError(f"adapters not loaded: {sorted(wanted - loaded)}")
    _generate_isolated(model, rows)
    ended = time.monotonic()
    outcomes: list[RowOutcome] = []
    for row in rows:
        if row.error is not None:
            outcomes.append(row.error)
            continue
        row.finish("length")  # generate ran out of steps: the row's own limit or the batch's
        outcomes.append(row_result(row, row.decoder.text, model.name, started, ended, len(rows)))
    return outcomes


def _generate_isolated(model: LoadedModel, rows: Sequence[BatchRow]) -> None:
    """Run the rows together; if `generate` fails, run each row still going alone."""
    try:
        _generate(model, rows)
        return
    except Exception as exc:
        failure = exc
    going = [row for row in rows if row.finish_reason is None]
    if len(rows) == 1:
        _row_failed(rows[0], failure)
        return
    if is_out_of_memory(failure):
        free_cache()
        log.warning(
            "out of memory in a batch of %d; going on with its %d unfinished rows one at a time",
            len(rows),
            len(going),
        )
    else:
        log.error(
            "generation failed for a batch of %d; going on with its %d unfinished rows one at "
            "a time",
            len(rows),
            len(going),
            exc_info=failure,
        )
    for row in going:
        try:
            _generate(model, [row])
        except Exception as exc:
            _row_failed(row, exc)


def _row_failed(row: BatchRow, exc: Exception) -> None:
    if is_out_of_memory(exc):
        free_cache()
        log.warning("out of memory while generating; the request was answered with an error")
        row.fail(GenerationFailed(OUT_OF_MEMORY_REPLY, detail=str(exc)))
        return
    log.error("generation failed", exc_info=exc)
    row.fail(GenerationFailed(GENERIC_FAILURE_REPLY, detail=str(exc)))


def _generate(model: LoadedModel, rows: Sequence[BatchRow]) -> None:
    """One `generate` call for `rows`, each continuing from the tokens it already has (none on
    the first call)."""
    import torch
    from transformers import StoppingCriteriaList

    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    sequences = [[*row.prompt.ids, *row.decoder.ids] for row in rows]
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(rows), width), pad_id or 0, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(sequences):
        input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids) :] = 1
    kwargs = _sampling_kwargs([row.prompt.params for row in rows])
    kwargs["max_new_tokens"] = max(row.remaining for row in rows)
    if _is_peft(model.model):
        # Each row names its persona's adapter; without this a peft model would apply its
        # active adapter to every row.
        kwargs["adapter_names"] = [row.prompt.adapter or BASE for row in rows]
    with torch.inference_mode():
        model.model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention.to(model.device),
            streamer=BatchStreamer(rows, tokenizer.eos_id),
            stopping_criteria=StoppingCriteriaList([_stopping_criteria(rows)]),
            eos_token_id=tokenizer.eos_id,
            pad_token_id=pad_id,
            # Checkpoints saved after training often say `use_cache: false`; without a
            # generation_config.json transformers would then re-feed the whole sequence at
            # every step (several times slower, growing with the history).
            use_cache=True,
            **kwargs,
        )


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def free_cache() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
