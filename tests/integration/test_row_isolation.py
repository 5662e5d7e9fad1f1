"""One bad row must not fail its batch. Faults are injected into one row of six on the real
(tiny) demo model; under greedy decoding a batched row equals the same request alone, so the
other rows must get exactly the replies they get alone."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from bot.errors import GENERIC_FAILURE_REPLY, OUT_OF_MEMORY_REPLY
from bot.models.tokenizers import IncrementalDecoder
from tests.integration.test_batching import ask_held
from tests.integration.test_pipeline import ask

QUESTIONS = [
    "こんにちは",
    "今日の天気は？",
    "毒入りのりんごの話をして",  # the row the model-side faults pick out
    "おすすめのラーメン屋を教えて",
    "ありがとう！",
    "明日は何をしようかな",
]
POISONED = 2
SETTINGS = {"temperature": 0, "max_new_tokens": 12, "max_batch_size": 8}


_alone: list[str] = []


async def replies_alone(app) -> list[str]:
    """Each question's reply when asked alone (the same for every app: the demo model is
    built with a fixed seed and decoding is greedy), worked out once for the module."""
    if not _alone:
        _alone.extend(
            [(await ask(app, q, channel=f"alone{i}")).final for i, q in enumerate(QUESTIONS)]
        )
    return list(_alone)


async def ask_batch(app) -> list[Any]:
    return await ask_held(app, [(q, {"channel": f"batch{i}"}) for i, q in enumerate(QUESTIONS)])


def assert_one_batch(app) -> None:
    assert list(app.worker.batch_sizes)[-1] == len(QUESTIONS)


def assert_streamed_once(sink: Any) -> None:
    """Every partial shown was the start of the final reply: a row that was retried went on
    from what it had shown, it did not start again (which would show its text twice)."""
    assert sink.final
    assert all(sink.final.startswith(update) for update in sink.updates), sink.updates


def raise_from_forward(
    app, error: BaseException, *, after_calls: int, poison: str | None = None
) -> dict[str, int]:
    """Make the model's forward pass raise `error`, once more than `after_calls` forward calls
    were made. With `poison`: every time a generate call's rows include a prompt containing it
    (that row can never continue). Without: once, and only in a batch of several rows."""
    loaded = app.worker.current
    state = {"calls": 0, "rows": 0, "poisoned": 0, "fired": 0}

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs["input_ids"]
        state["calls"] += 1
        if ids.shape[1] > 1:  # the prompt: a new generate call begins
            state["rows"] = ids.shape[0]
            texts = [loaded.tokenizer.decode(row.tolist()) for row in ids]
            state["poisoned"] = int(poison is not None and any(poison in t for t in texts))
        if state["calls"] <= after_calls:
            return
        if poison is not None and not state["poisoned"]:
            return
        if poison is None and (state["rows"] < 2 or state["fired"]):
            return
        state["fired"] += 1
        raise error

    loaded.model.register_forward_pre_hook(hook, with_kwargs=True)
    return state


async def test_a_row_whose_decoding_fails_is_answered_alone_with_the_apology(
    make_app, monkeypatch, caplog
):
    app = await make_app(**SETTINGS)
    alone = await replies_alone(app)

    class BrokenDecoder(IncrementalDecoder):
        def push(self, token_id: int) -> str:
            if len(self.ids) >= 2:  # after it has streamed some text
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
            return super().push(token_id)

    made: list[IncrementalDecoder] = []

    def decoder(tokenizer: Any) -> IncrementalDecoder:
        made.append((BrokenDecoder if len(made) == POISONED else IncrementalDecoder)(tokenizer))
        return made[-1]

    monkeypatch.setattr("bot.engines.transformers.batch.IncrementalDecoder", decoder)
    sinks = await ask_batch(app)

    finals = [s.final for s in sinks]
    failed = [i for i, final in enumerate(finals) if final == GENERIC_FAILURE_REPLY]
    assert len(failed) == 1, finals  # the third row of the batch, whichever channel that was
    assert [f for i, f in enumerate(finals) if i not in failed] == [
        a for i, a in enumerate(alone) if i not in failed
    ]
    assert any("UnicodeDecodeError" in (r.exc_text or "") for r in caplog.records)
    assert_one_batch(app)


@pytest.mark.parametrize(
    ("error", "after_calls", "reply"),
    [
        (
            RuntimeError("CUDA error: an illegal memory access was encountered"),
            0,
            GENERIC_FAILURE_REPLY,
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            4,
            OUT_OF_MEMORY_REPLY,
        ),
    ],
    ids=["runtime-error-on-the-prompt", "out-of-memory-after-streaming"],
)
async def test_a_row_the_model_cannot_run_fails_alone(make_app, error, after_calls, reply):
    app = await make_app(**SETTINGS)
    alone = await replies_alone(app)
    await app.worker.call(
        lambda: raise_from_forward(app, error, after_calls=after_calls, poison="毒入り")
    )

    sinks = await ask_batch(app)

    finals = [s.final for s in sinks]
    assert finals[POISONED] == reply
    assert bool(sinks[POISONED].updates) == (after_calls > 0)  # it had streamed, or not
    assert finals[:POISONED] + finals[POISONED + 1 :] == alone[:POISONED] + alone[POISONED + 1 :]
    for i, sink in enumerate(sinks):
        if i != POISONED:
            assert_streamed_once(sink)
    assert_one_batch(app)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
    ids=["runtime-error", "out-of-memory"],
)
async def test_a_batch_that_fails_mid_reply_goes_on_row_by_row(make_app, caplog, error):
    app = await make_app(**SETTINGS)
    alone = await replies_alone(app)
    state = await app.worker.call(lambda: raise_from_forward(app, error, after_calls=4))

    with caplog.at_level(logging.WARNING):
        sinks = await ask_batch(app)

    assert state["fired"] == 1
    assert [s.final for s in sinks] == alone
    for sink in sinks:
        assert_streamed_once(sink)
    assert_one_batch(app)
