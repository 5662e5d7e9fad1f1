"""The graceful stop inside the app (bot/app/lifecycle.py, App.stop_replies): new messages are turned
away, a reply in progress gets the grace, then is stopped with a note and stored."""

from __future__ import annotations

import asyncio

from bot.chat.replies import SHUTDOWN_NOTE, SHUTTING_DOWN_REPLY
from bot.messages import NullSink
from tests.conftest import message

LONG_REPLY = "今日はいい天気ですね。散歩に行きましょう。" * 20  # hundreds of tokens


def stored(app) -> list[tuple[str, str]]:
    conversation = app.repository.active_conversation(message("x").key)
    if conversation is None:
        return []
    return [(m.role, m.text) for m in app.repository.recent_messages(conversation)]


async def test_a_message_during_shutdown_is_turned_away_and_not_stored(make_app) -> None:
    app = await make_app(replies=["はい"])
    await app.stop_replies(grace_s=5)
    sink = NullSink()
    await app.manager.handle(message("こんにちは"), sink)
    assert sink.text == SHUTTING_DOWN_REPLY
    assert stored(app) == []


async def test_a_reply_past_the_grace_is_stopped_with_a_note_and_stored(make_app) -> None:
    app = await make_app(
        replies=[LONG_REPLY], script_kwargs={"eos": False, "delay_s": 0.05}, max_new_tokens=300
    )
    sink = NullSink()
    reply = asyncio.create_task(app.manager.handle(message("長い話をして"), sink))
    await asyncio.to_thread(app.scripted.started.wait, 30)
    await asyncio.sleep(0.3)  # a few tokens in
    await app.stop_replies(grace_s=0.1)
    assert reply.done()
    assert sink.text is not None and sink.text.endswith(SHUTDOWN_NOTE)
    ((_, question), (role, answer)) = stored(app)
    assert (question, role) == ("長い話をして", "assistant")
    assert answer and SHUTDOWN_NOTE not in answer
    assert sink.text == f"{answer}\n{SHUTDOWN_NOTE}"


async def test_a_second_signal_ends_the_grace_at_once(make_app) -> None:
    app = await make_app(
        replies=[LONG_REPLY], script_kwargs={"eos": False, "delay_s": 0.05}, max_new_tokens=300
    )
    sink = NullSink()
    reply = asyncio.create_task(app.manager.handle(message("長い話をして"), sink))
    while app.manager.replies.count == 0:
        await asyncio.sleep(0.01)
    hurry = asyncio.Event()
    stopping = asyncio.create_task(app.stop_replies(grace_s=600, hurry=hurry))
    await asyncio.sleep(0.2)
    assert not stopping.done()
    hurry.set()
    await asyncio.wait_for(stopping, 30)
    assert reply.done() and sink.text is not None and sink.text.endswith(SHUTDOWN_NOTE)
