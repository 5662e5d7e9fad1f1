"""Generate replies for several requests in one `generate` call.

Rows are left-padded; each row streams its own text, stops on its own (end-of-text, an invented
next turn, its own token limit, cancellation, timeout) and gets its own result. Runs only on
the model worker's thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.lora import BASE
from bot.model_loader import LoadedModel
from bot.row_sampling import PerRowSampling, shared_generate_kwargs
from bot.sampling import SamplingParams
from bot.tokenizer import IncrementalDecoder
from bot.worker_types import GenerationHandle, GenerationResult, PreparedPrompt


@dataclass
class Row:
    """One request inside a batch."""

    prepared: PreparedPrompt
    handle: GenerationHandle
    submitted: float
    deadline: float
    decoder: IncrementalDecoder
    new_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    stops: tuple[str, ...] = field(default=())

    def finish(self, reason: str) -> None:
        if self.finish_reason is None:
            self.finish_reason = reason
            self.finished_at = time.monotonic()


class BatchStreamer:
    """Receives each step's new tokens from `generate` and feeds every live row."""

    def __init__(self, rows: Sequence[Row], eos_id: int | None) -> None:
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
            row.first_token_at = row.first_token_at or now
            row.new_tokens += 1
            if token_id == self.eos_id:
                row.finish("eos")
                continue
            delta = row.decoder.push(token_id)
            if delta:
                row.handle.emit(delta)
                tail = row.decoder.text[-(len(delta) + max(map(len, row.stops)) + 1) :]
                if any(stop in tail for stop in row.stops):
                    row.finish("stop")
            if row.finish_reason is None and row.new_tokens >= row.prepared.params.max_new_tokens:
                row.finish("length")

    def end(self) -> None:
        pass


def _stopping_criteria(rows: Sequence[Row]) -> Any:
    import torch
    from transformers import StoppingCriteria

    class RowsDone(StoppingCriteria):
        """Per-row: a row is done once finished, cancelled or past its deadline."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            for row in rows:
                if row.finish_reason is None:
                    if row.handle.cancel_event.is_set():
                        row.finish("cancelled")
                    elif now > row.deadline:
                        row.finish("timeout")
            done = [row.finish_reason is not None for row in rows]
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


def generate_batch(
    model: LoadedModel,
    prepared: Sequence[PreparedPrompt],
    handles: Sequence[GenerationHandle],
    submitted: Sequence[float],
    timeouts: Sequence[float],
) -> list[GenerationResult]:
    """Generate every row. Rows may differ in token limit, temperature, top-p, top-k and
    repetition penalty (see `_sampling_kwargs`) and adapter; they must share the rest."""
    import torch
    from transformers import StoppingCriteriaList

    started = time.monotonic()
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    rows = [
        Row(p, h, s, started + t, IncrementalDecoder(tokenizer), stops=(*p.stop_strings, "</s>"))
        for p, h, s, t in zip(prepared, handles, submitted, timeouts, strict=True)
    ]
    width = max(len(p.ids) for p in prepared)
    input_ids = torch.full((len(rows), width), pad_id or 0, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, p in enumerate(prepared):
        input_ids[i, width - len(p.ids) :] = torch.tensor(p.ids, dtype=torch.long)
        attention[i, width - len(p.ids) :] = 1
    kwargs = _sampling_kwargs([p.params for p in prepared])
    kwargs["max_new_tokens"] = max(p.params.max_new_tokens for p in prepared)
    peft = _is_peft(model.model)
    wanted = {p.adapter for p in prepared if p.adapter}
    loaded = set(model.model.peft_config) if peft else set()
    if wanted - loaded:  # never answer a persona's row with the wrong weights
        raise RuntimeError(f"adapters not loaded: {sorted(wanted - loaded)}")
    if peft:
        # Each row names its persona's adapter; without this a peft model would apply its
        # active adapter to every row.
        kwargs["adapter_names"] = [p.adapter or BASE for p in prepared]
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
    ended = time.monotonic()
    results = []
    for row in rows:
        row.finish("length")  # generate ran out of steps: the row's own limit or the batch's
        first = row.first_token_at or ended
        done = row.finished_at or ended
        results.append(
            GenerationResult(
                raw_text=row.decoder.text,
                finish_reason=row.finish_reason or "length",
                prompt_tokens=len(row.prepared.ids),
                new_tokens=row.new_tokens,
                stop_strings=row.prepared.stop_strings,
                turns_used=row.prepared.turns_used,
                model_name=model.name,
                queue_wait_s=started - row.submitted,
                prompt_s=first - started,
                generation_s=done - first,
                batch_size=len(rows),
            )
        )
    return results
