"""End to end over Socket Mode: real slack-bolt and slack_sdk against the fake Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import text

from adapters.slack.adapter import APOLOGY
from bot.chat.replies import SHUTTING_DOWN_REPLY
from bot.messages import ConversationKey
from tests.platforms.slack_fake_server import (
    ROOT,
    TEAM,
    FakeSlack,
    deliver,
    fake_slack,
    mention,
    message,
    replied,
    running_socket_mode,
    settle,
    socket_mode_apps,
)

CHANNEL = "C0CHAN"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
async def slack_app(make_app: Callable[..., Any], fake: FakeSlack) -> AsyncIterator[Callable]:
    async with socket_mode_apps(make_app, fake) as start:
        yield start


async def test_mention_is_answered_in_its_thread_with_a_streamed_clean_final_text(slack_app, fake):
    app, adapter = await slack_app(
        ["こんにちは！<NL>元気です。<NL>ユーザー: 嘘の続き"], delay_s=0.02, eos=False
    )
    ack_s = await deliver(fake, mention("やあ", ts=ROOT))

    [post] = await replied(fake, adapter)
    assert ack_s < 3.0
    assert fake.acks["env-1"][0] < post.at  # acknowledged before any reply work showed
    assert post.args["channel"] == CHANNEL and post.args["thread_ts"] == ROOT
    assert post.args["link_names"] is False
    shown = fake.shown(post.args["ts"])
    assert len(shown) >= 3, shown  # posted, edited while streaming, then the final text
    assert shown[-1] == "こんにちは!\n元気です。"
    assert all(text.endswith(" …") for text in shown[:-1])
    assert not any("ユーザー" in text or "<NL>" in text for text in shown)
    assert "やあ" in app.scripted.prompts[0] and "UBOT" not in app.scripted.prompts[0]


async def test_a_thread_continues_the_conversation_and_survives_a_restart(slack_app, fake):
    app, adapter = await slack_app(["一つ目の返事です。", "二つ目の返事です。", "三つ目です。"])
    await deliver(fake, mention("最初の質問", ts=ROOT), event_id="Ev1")
    await replied(fake, adapter, 1)
    # Neither a thread the bot never joined nor the channel's own timeline is for the bot.
    await deliver(
        fake, message("よその話", ts="1700000200.1", thread_ts="1700000150.1"), event_id="Ev2"
    )
    await deliver(fake, message("独り言", ts="1700000200.2"), event_id="Ev3")
    await deliver(fake, message("続きの質問", ts="1700000200.3", thread_ts=ROOT), event_id="Ev4")

    posts = await replied(fake, adapter, 2)
    assert [p.args["thread_ts"] for p in posts] == [ROOT, ROOT]
    assert len(app.scripted.prompts) == 2
    second = app.scripted.prompts[1]
    assert (
        second.index("最初の質問") < second.index("一つ目の返事です。") < second.index("続きの質問")
    )

    # A new adapter (a restarted bot) still knows the thread it joined.
    await adapter.close()
    async with running_socket_mode(app, fake) as restarted:
        await deliver(
            fake, message("まだいる？", ts="1700000300.1", thread_ts=ROOT), event_id="Ev5"
        )
        posts = await replied(fake, restarted, 3)
    assert posts[-1].args["thread_ts"] == ROOT
    assert "続きの質問" in app.scripted.prompts[2]


@pytest.mark.parametrize(
    "again",
    [
        pytest.param(
            {"event_id": "Ev1", "retry_attempt": 1, "retry_reason": "timeout"}, id="retry"
        ),
        pytest.param({"event_id": "Ev1"}, id="same-event-id"),
        pytest.param({"event_id": "Ev2"}, id="same-message-new-event-id"),
        pytest.param({"event_id": "Ev2", "as_message": True}, id="message-event-for-the-mention"),
    ],
)
async def test_a_redelivered_event_gets_no_second_reply(slack_app, fake, again):
    app, adapter = await slack_app(["一度だけ答えます。", "二度目はありません。"])
    event = mention("こんにちは", ts=ROOT)
    await deliver(fake, event, event_id="Ev1")
    await replied(fake, adapter, 1)

    if again.pop("as_message", False):  # Slack also sends the mention as a message event
        event = message(event["text"], ts=ROOT)
    ack_s = await deliver(fake, event, **again)
    await settle(adapter)

    assert ack_s < 3.0
    assert len(fake.posts()) == 1
    assert len(app.scripted.prompts) == 1


async def test_model_output_cannot_notify_anyone(slack_app, fake):
    _, adapter = await slack_app(
        ["みなさん <!channel> と <!here> と <@U0BOB> に & お知らせです。"], delay_s=0.01
    )
    await deliver(fake, mention("お知らせして", ts=ROOT))
    [post] = await replied(fake, adapter)

    shown = fake.shown(post.args["ts"])
    assert shown[-1] == (
        "みなさん &lt;!channel&gt; と &lt;!here&gt; と &lt;@U0BOB&gt; に &amp; お知らせです。"
    )
    assert not any("<" in text or ">" in text for text in shown)
    assert all(c.args["link_names"] is False for c in fake.api("chat.postMessage", "chat.update"))


async def test_a_dm_is_answered_in_the_dm(slack_app, fake):
    app, adapter = await slack_app(["DMで答えます。"])
    await deliver(
        fake, message("ひみつの相談", ts="1700000400.1", channel="D0DM", channel_type="im")
    )
    [post] = await replied(fake, adapter)

    assert post.args["channel"] == "D0DM" and "thread_ts" not in post.args
    key = ConversationKey("slack", TEAM, "D0DM")
    conversation = app.repository.active_conversation(key)
    assert [m.text for m in app.repository.recent_messages(conversation)] == [
        "ひみつの相談",
        "DMで答えます。",
    ]


async def test_bot_messages_are_ignored_including_its_own(slack_app, fake):
    app, adapter = await slack_app(["人にだけ答えます。"])
    dm = {"channel": "D0DM", "channel_type": "im"}
    ignored = [
        message("別のボット", ts="1.1", bot_id="B0OTHER", **dm),
        message("ボットの投稿", ts="1.2", subtype="bot_message", **dm),
        message("自分の返事", ts="1.3", user="UBOT", **dm),
        message("編集", ts="1.4", subtype="message_changed", **dm),
    ]
    for number, event in enumerate(ignored):
        await deliver(fake, event, event_id=f"EvIgnored{number}")
    await deliver(fake, message("人間です", ts="1.5", **dm), event_id="EvHuman")

    await replied(fake, adapter, 1)
    assert len(fake.posts()) == 1
    assert len(app.scripted.prompts) == 1 and "人間です" in app.scripted.prompts[0]


async def test_mentions_of_other_people_reach_the_model_as_names(slack_app, fake):
    app, adapter = await slack_app(["はい。"])
    text = "<@U0BOB> と <@U0NOBODY|nobody> と <@U0GHOST> &amp; <#C0CHAN|general> の話"
    await deliver(fake, mention(text, ts=ROOT))
    await replied(fake, adapter)

    prompt = app.scripted.prompts[0]
    assert "@ボブ と @nobody と @U0GHOST & #general の話" in prompt
    assert "UBOT" not in prompt


async def test_a_failure_before_the_reply_is_answered_with_an_apology(slack_app, fake):
    app, adapter = await slack_app(["届かない返事"])

    async def broken_join(*args: object) -> None:
        raise RuntimeError("database is gone")

    adapter.threads.join = broken_join
    await deliver(fake, mention("こんにちは", ts=ROOT))
    [post] = await replied(fake, adapter)

    assert post.args["thread_ts"] == ROOT
    assert fake.message_text(post.args["ts"]) == APOLOGY
    assert not app.scripted.prompts


async def test_reset_by_text_is_for_admins_in_a_thread_and_open_in_a_dm(slack_app, fake):
    app, adapter = await slack_app(["覚えました。", "DMで覚えました。"])
    await deliver(fake, mention("覚えておいて", ts=ROOT))
    await replied(fake, adapter)
    await deliver(fake, mention("/reset", ts="1700000300.1", thread_ts=ROOT), event_id="Ev2")
    [_, refusal] = await replied(fake, adapter, 2)
    assert "管理者" in fake.message_text(refusal.args["ts"])
    thread = ConversationKey("slack", TEAM, CHANNEL, ROOT)
    conversation = app.repository.active_conversation(thread)
    assert app.repository.count_messages(conversation) == 2  # nobody's context was wiped

    dm = {"channel": "D0DM", "channel_type": "im"}
    await deliver(fake, message("ひみつ", ts="1700000400.1", **dm), event_id="Ev3")
    await replied(fake, adapter, 3)
    await deliver(fake, message("/reset", ts="1700000500.1", **dm), event_id="Ev4")
    [*_, done] = await replied(fake, adapter, 4)
    assert fake.message_text(done.args["ts"]).startswith("会話をリセットしました")
    dm_conversation = app.repository.active_conversation(ConversationKey("slack", TEAM, "D0DM"))
    assert app.repository.count_messages(dm_conversation) == 0


async def test_while_shutting_down_a_mention_is_turned_away_without_claiming_it(slack_app, fake):
    # Unclaimed, the event stays free for another bot process to answer when Slack retries it.
    app, adapter = await slack_app(["答えません。"])
    await app.stop_replies(0)
    await deliver(fake, mention("こんにちは", ts=ROOT))

    [post] = await replied(fake, adapter)
    assert fake.message_text(post.args["ts"]) == SHUTTING_DOWN_REPLY
    with app.database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM claimed_events")).scalar() == 0
    assert app.scripted.prompts == []


async def test_an_answered_event_is_marked_done_so_no_retry_claims_it_again(slack_app, fake):
    app, adapter = await slack_app(["一度だけ。"])
    await deliver(fake, mention("こんにちは", ts=ROOT))
    await replied(fake, adapter)
    with app.database.connect() as connection:
        [(key, done_at)] = connection.execute(text("SELECT key, done_at FROM claimed_events")).all()
    assert key == f"slack:{TEAM}:message:{CHANNEL}:{ROOT}"
    assert done_at is not None
