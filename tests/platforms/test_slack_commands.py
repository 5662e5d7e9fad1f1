"""The /chat slash command end to end over Socket Mode: acknowledged at once, answered through
the response URL, admin-only subcommands refused to others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from adapters.slack.commands import REFUSAL
from bot.messages import ConversationKey
from tests.platforms.slack_fake_server import (
    ROOT,
    TEAM,
    FakeSlack,
    deliver,
    fake_slack,
    mention,
    replied,
    settle,
    slash_command,
    socket_mode_apps,
)

CHANNEL_KEY = ConversationKey("slack", TEAM, "C0CHAN")


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
async def slack_app(make_app: Callable[..., Any], fake: FakeSlack) -> AsyncIterator[Callable]:
    async with socket_mode_apps(make_app, fake) as start:
        yield start


async def chat(fake: FakeSlack, adapter: Any, text: str, *, user: str, count: int = 1) -> list:
    """Run `/chat <text>` as `user`; returns the follow-ups posted to the response URL."""
    before = len(fake.responses)
    payload = slash_command(text, user=user, response_url=f"{fake.url}/respond/1")
    envelope = await fake.send_envelope("slash_commands", payload)
    elapsed, ack = await fake.wait_ack(envelope)
    assert elapsed < 3.0
    assert ack == {"envelope_id": envelope}  # an empty ack: the answer follows
    await fake.wait_for(lambda: len(fake.responses) >= before + count)
    await settle(adapter)
    return fake.responses[before:]


@pytest.mark.parametrize(
    ("user", "flags", "settings"),
    [
        pytest.param("UADMIN", {}, {}, id="configured-admin"),
        pytest.param("U0ALICE", {"is_admin": True}, {}, id="workspace-admin"),
        pytest.param("U0ALICE", {"is_owner": True}, {}, id="workspace-owner"),
    ],
)
async def test_an_admin_switches_the_persona(slack_app, fake, user, flags, settings):
    fake.add_user(user, "アリス", **flags)
    app, adapter = await slack_app(["明るく答えるよ！"], **settings)

    [response] = await chat(fake, adapter, "persona friendly", user=user)

    assert response["response_type"] == "in_channel"
    assert "フレンドリー" in response["text"]
    assert app.repository.channel_settings(CHANNEL_KEY).persona == "friendly"
    # The next conversation in the channel speaks with the persona's voice.
    await deliver(fake, mention("元気？", ts=ROOT))
    await replied(fake, adapter)
    assert "明るくくだけた口調" in app.scripted.prompts[0]


@pytest.mark.parametrize(
    ("user", "flags", "settings"),
    [
        pytest.param("U0ALICE", {}, {}, id="member"),
        pytest.param(
            "U0ALICE",
            {"is_admin": True},
            {"slack_workspace_admins_are_admins": False},
            id="workspace-admin-when-not-trusted",
        ),
        pytest.param("U0GONE", None, {}, id="users-info-fails"),
    ],
)
async def test_a_non_admin_is_refused(slack_app, fake, user, flags, settings):
    if flags is not None:
        fake.add_user(user, "アリス", **flags)
    app, adapter = await slack_app([], **settings)
    model = app.worker.current

    for text in ("persona friendly", "model demo", "temperature 0.1", "set clear"):
        [response] = await chat(fake, adapter, text, user=user)
        assert response == {"text": REFUSAL, "response_type": "ephemeral"}, text

    assert app.repository.channel_settings(CHANNEL_KEY).persona is None
    assert app.worker.current is model  # not reloaded
    assert not fake.posts()


async def test_anyone_gets_help_status_and_the_persona_list_privately(slack_app, fake):
    _, adapter = await slack_app([])
    replies = {}
    for text in ("", "status", "persona", "model", "nonsense"):
        [response] = await chat(fake, adapter, text, user="U0ALICE")
        assert response["response_type"] == "ephemeral", text
        replies[text] = response["text"]

    assert "/chat persona &lt;名前&gt;" in replies[""]  # escaped for mrkdwn
    assert "モデル: demo" in replies["status"]
    assert "friendly" in replies["persona"] and "/chat persona" in replies["persona"]
    assert "今のモデル: demo" in replies["model"]
    assert "nonsense" in replies["nonsense"]


async def test_a_model_switch_is_acknowledged_at_once_and_followed_up(slack_app, fake):
    app, adapter = await slack_app([])
    real_load = app.worker.load

    async def slow_load(spec: str) -> Any:  # a real model takes minutes; half a second will do
        await asyncio.sleep(0.5)
        return await real_load(spec)

    app.worker.load = slow_load
    progress, done = await chat(fake, adapter, "model demo", user="UADMIN", count=2)

    [(acked_at, _)] = fake.acks.values()
    assert acked_at < fake.responded_at[-1] - 0.4  # acked long before the load finished
    assert progress["response_type"] == "ephemeral" and "読み込んでいます" in progress["text"]
    assert done["response_type"] == "in_channel" and "demo" in done["text"]
    assert app.worker.current.name == "demo"


async def test_per_channel_settings_shape_the_next_reply(slack_app, fake):
    app, adapter = await slack_app(["設定どおりに答えます。"])
    await chat(fake, adapter, "temperature 0.3", user="UADMIN")
    [response] = await chat(fake, adapter, "length 40", user="UADMIN")
    assert response["response_type"] == "in_channel"
    assert app.repository.channel_settings(CHANNEL_KEY).sampling == {
        "temperature": 0.3,
        "max_new_tokens": 40,
    }
    [bad] = await chat(fake, adapter, "temperature hot", user="UADMIN")
    assert bad["response_type"] == "ephemeral" and "数値" in bad["text"]

    await deliver(fake, mention("短くね", ts=ROOT))
    await replied(fake, adapter)
    assert app.scripted.calls[-1]["max_new_tokens"] == 40
    assert app.scripted.calls[-1]["temperature"] == pytest.approx(0.3)


async def test_stop_ends_a_reply_in_any_thread_of_the_channel(slack_app, fake):
    _, adapter = await slack_app(["とても長い返事です。" * 40], delay_s=0.05)
    await deliver(fake, mention("長く話して", ts=ROOT))
    await fake.wait_for(lambda: fake.posts())

    [response] = await chat(fake, adapter, "stop", user="U0ALICE")

    assert response["text"] == "生成を止めました。"
    [post] = fake.posts()
    assert fake.message_text(post.args["ts"]).endswith("（/stop で止めました）")
    [again] = await chat(fake, adapter, "stop", user="U0ALICE")
    assert again["text"] == "このチャンネルで生成中の返事はありません。"


async def test_reset_in_a_dm_starts_over_and_in_a_channel_explains_threads(slack_app, fake):
    app, adapter = await slack_app([])
    dm_key = ConversationKey("slack", TEAM, "D0DM")
    before = app.repository.active_conversation(dm_key)
    payload = slash_command(
        "reset", user="U0ALICE", response_url=f"{fake.url}/respond/2", channel="D0DM"
    )
    await fake.wait_ack(await fake.send_envelope("slash_commands", payload))
    await fake.wait_for(lambda: fake.responses)
    await settle(adapter)
    assert app.repository.active_conversation(dm_key) != before
    assert fake.responses[0]["response_type"] == "in_channel"

    [channel] = await chat(fake, adapter, "reset", user="U0ALICE")
    assert "スレッド" in channel["text"] and channel["response_type"] == "ephemeral"
