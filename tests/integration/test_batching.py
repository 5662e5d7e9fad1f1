"""One worker serving many channels at once: batches, grouping, a bounded queue."""

from __future__ import annotations

import asyncio
import logging
import threading

from tests.conftest import message
from tests.integration.test_pipeline import RecordingSink, ask


async def hold_worker(app) -> tuple[threading.Event, asyncio.Task]:
    """Keep the worker busy so that requests pile up and go out as one batch on release."""
    release = threading.Event()
    blocker = asyncio.create_task(app.worker.call(lambda: release.wait(20)))
    await asyncio.sleep(0.05)
    return release, blocker


async def wait_for_queue(app, depth: int) -> None:
    for _ in range(400):
        if app.worker.queue_depth >= depth:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"queue never reached {depth}: {app.worker.queue_depth}")


async def ask_held(app, requests: list[tuple[str, dict]]) -> list[RecordingSink]:
    """Send `(text, message kwargs)` requests while the worker is held, so they all wait in
    the queue, then release it; returns each request's sink, in order."""
    release, blocker = await hold_worker(app)
    tasks = [asyncio.create_task(ask(app, text, **kwargs)) for text, kwargs in requests]
    await wait_for_queue(app, len(requests))
    release.set()
    await blocker
    return [await task for task in tasks]


QUESTIONS = ["こんにちは", "今日の天気は？", "おすすめのラーメン屋を教えて", "ありがとう！"]


async def test_a_batched_reply_equals_the_same_request_alone_under_greedy_decoding(
    make_app, caplog
):
    app = await make_app(temperature=0, max_new_tokens=24, max_batch_size=8)
    alone = [(await ask(app, q, channel=f"alone{i}")).final for i, q in enumerate(QUESTIONS)]

    caplog.set_level(logging.INFO, logger="bot.replies")
    sinks = await ask_held(app, [(q, {"channel": f"batch{i}"}) for i, q in enumerate(QUESTIONS)])
    together = [s.final for s in sinks]

    assert together == alone
    batch_lines = [r.message for r in caplog.records if "conversation=test:w1/batch" in r.message]
    assert len(batch_lines) == 4 and all("batch=4 " in line for line in batch_lines)


async def test_rows_stream_and_stop_on_their_own(make_app):
    replies = ["短い。", "これは少し長めの返事で、二文あります。最後です。", "中くらいの返事です。"]
    app = await make_app(replies=replies, script_kwargs={"delay_s": 0.002})
    release, blocker = await hold_worker(app)
    sinks = [RecordingSink() for _ in replies]
    tasks = [
        asyncio.create_task(app.manager.handle(message(f"質問{i}", channel=f"c{i}"), sinks[i]))
        for i in range(3)
    ]
    await wait_for_queue(app, 3)
    release.set()
    await blocker
    await asyncio.gather(*tasks)
    assert app.scripted.batch_sizes == [3]
    assert [s.final for s in sinks] == [
        "短い。",
        "これは少し長めの返事で、二文あります。最後です。",
        "中くらいの返事です。",
    ]
    for sink, reply in zip(sinks, replies, strict=True):
        assert len(sink.updates) > 1  # streamed piece by piece, not in one lump
        assert all(reply.startswith(update) for update in sink.updates)


async def test_rows_with_different_temperatures_share_a_batch(make_app):
    app = await make_app(replies=[f"返事{i}。" for i in range(4)])
    for channel, temperature in (("hot", "0.9"), ("cold", "0.3")):
        await ask(app, f"/set temperature {temperature}", channel=channel, admin=True)
    order = [("hot", "a"), ("cold", "b"), ("hot", "c"), ("cold", "d")]
    sinks = await ask_held(app, [(text, {"channel": c, "thread": text}) for c, text in order])
    assert app.scripted.batch_sizes == [4]
    [processor] = app.scripted.calls[0]["logits_processor"]
    assert [p.temperature for p in processor.params] == [0.9, 0.3, 0.9, 0.3]
    assert sorted(s.final for s in sinks) == [f"返事{i}。" for i in range(4)]


async def test_rows_that_cannot_share_a_batch_are_grouped_first_come_first_served(make_app):
    app = await make_app(replies=[f"返事{i}。" for i in range(4)])
    await ask(app, "/set no_repeat_ngram_size 3", channel="strict", admin=True)
    order = [("free", "a"), ("strict", "b"), ("free", "c"), ("strict", "d")]
    await ask_held(app, [(text, {"channel": c, "thread": text}) for c, text in order])
    assert app.scripted.batch_sizes == [2, 2]
    ngram = [call["no_repeat_ngram_size"] for call in app.scripted.calls]
    assert ngram == [0, 0, 3, 3]  # the oldest request's group goes first


async def test_a_greedy_row_in_a_mixed_batch_equals_its_reply_alone(make_app):
    app = await make_app(max_new_tokens=24)
    await ask(app, "/set temperature 0", channel="greedy-alone", admin=True)
    await ask(app, "/set temperature 0", channel="greedy-batch", admin=True)
    await ask(app, "/set temperature 1.2", channel="warm", admin=True)
    await ask(app, "/set top_k 5", channel="warm", admin=True)
    alone = (await ask(app, QUESTIONS[1], channel="greedy-alone")).final
    sinks = await ask_held(
        app, [(QUESTIONS[1], {"channel": "greedy-batch"}), (QUESTIONS[2], {"channel": "warm"})]
    )
    greedy, warm = [s.final for s in sinks]
    assert list(app.worker.batch_sizes)[-1] == 2
    assert greedy == alone
    assert warm


async def test_batch_size_is_capped(make_app):
    app = await make_app(replies=["はい。"] * 5, max_batch_size=2)
    await ask_held(app, [("やあ", {"channel": f"c{i}"}) for i in range(5)])
    assert app.scripted.batch_sizes == [2, 2, 1]


async def test_a_full_queue_answers_busy_and_shows_positions(make_app):
    app = await make_app(replies=["はい。"] * 3, max_queue=3, max_batch_size=1)
    release, blocker = await hold_worker(app)
    sinks = [RecordingSink() for _ in range(4)]
    tasks = []
    for i, sink in enumerate(sinks):
        tasks.append(
            asyncio.create_task(app.manager.handle(message("やあ", channel=f"c{i}"), sink))
        )
        await asyncio.sleep(0.02)
    await wait_for_queue(app, 3)
    await asyncio.wait_for(tasks[3], 5)
    assert "混み合っています" in sinks[3].final
    release.set()
    await blocker
    await asyncio.gather(*tasks[:3])
    assert [s.final for s in sinks[:3]] == ["はい。"] * 3
    assert any("前に 2 件" in u for u in sinks[2].updates)
    assert app.worker.queue_depth == 0


async def test_a_model_swap_waits_for_requests_queued_before_it(make_app):
    app = await make_app(replies=["古いモデルで答えます。"])
    release, blocker = await hold_worker(app)
    old_model = app.scripted
    chat = asyncio.create_task(ask(app, "先に来た質問"))
    await wait_for_queue(app, 1)
    swap = asyncio.create_task(ask(app, "/model demo", admin=True))
    await asyncio.sleep(0.05)
    release.set()
    await blocker
    assert (await chat).final == "古いモデルで答えます。"
    assert "demo" in (await swap).final
    assert old_model.prompts and app.worker.current.model is not old_model


async def test_idle_unload_frees_the_model_and_the_next_message_reloads_it(make_app):
    app = await make_app(replies=["一回目。"], idle_unload_minutes=0.3 / 60)
    await ask(app, "こんにちは")
    for _ in range(200):
        if app.worker.current is None:
            break
        await asyncio.sleep(0.02)
    assert app.worker.current is None and app.worker.unloaded_spec == "demo"
    sink = await asyncio.wait_for(ask(app, "まだいますか"), 30)
    assert sink.final and app.worker.current is not None


async def test_a_burst_from_many_channels_shares_one_batch(make_app):
    # No held worker: the first request reaches an idle worker while the others are still
    # being stored; the worker holds the batch for them.
    app = await make_app(replies=[f"返事{i}。" for i in range(6)], max_batch_size=8)
    sinks = await asyncio.gather(*(ask(app, "やあ", channel=f"c{i}") for i in range(6)))
    assert app.scripted.batch_sizes == [6]
    assert sorted(s.final for s in sinks) == [f"返事{i}。" for i in range(6)]


async def test_a_lone_request_does_not_wait_for_the_batch_window(make_app):
    app = await make_app(replies=["すぐ答えます。"], batch_window_ms=60_000)
    sink = await asyncio.wait_for(ask(app, "ひとりです"), 30)
    assert sink.final == "すぐ答えます。"
