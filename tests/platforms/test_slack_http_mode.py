"""End to end over HTTP (Events API and the slash command): signed requests to the adapter's
aiohttp server, the real bolt verification, replies through the fake Web API. Also `serve()`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

import adapters.slack.run as slack_adapter
from adapters.slack.adapter import SlackAdapter, SlackConfigError
from adapters.slack.commands import REFUSAL
from bot.messages import ConversationKey
from tests.conftest import BOTH_DATABASES
from tests.platforms.slack_fake_server import (
    ROOT,
    TEAM,
    WAIT_S,
    FakeSlack,
    event_callback,
    fake_slack,
    form_body,
    mention,
    message,
    replied,
    settle,
    signed_headers,
    slash_command,
)

SECRET = "test-signing-secret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
async def http_app(make_app: Callable[..., Any], fake: FakeSlack) -> AsyncIterator[Callable]:
    """`await http_app(replies)` gives (app, adapter, events URL), serving on 127.0.0.1."""
    adapters: list[SlackAdapter] = []

    async def start(replies: list[str]) -> tuple[Any, SlackAdapter, str]:
        app = await make_app(
            replies,
            slack_bot_token="xoxb-test",
            slack_signing_secret=SECRET,
            slack_mode="http",
            slack_admin_user_ids="UADMIN",
        )
        adapter = SlackAdapter(app, api_base_url=fake.api_url, update_interval_s=0.05)
        adapters.append(adapter)
        port = await asyncio.wait_for(adapter.start_http("127.0.0.1", 0), WAIT_S)
        return app, adapter, f"http://127.0.0.1:{port}/slack/events"

    yield start
    for adapter in adapters:
        await asyncio.wait_for(adapter.close(), WAIT_S)


async def post(
    url: str, body: str, headers: dict[str, str], content_type: str = "application/json"
) -> tuple[int, str, float]:
    """POST like Slack does; returns the status, the body and how long the answer took."""
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        headers = {**headers, "Content-Type": content_type}
        async with session.post(url, data=body.encode(), headers=headers) as response:
            return response.status, await response.text(), time.monotonic() - started


async def test_a_signed_mention_is_answered_and_a_retried_delivery_is_not(http_app, fake):
    app, adapter, url = await http_app(["HTTPでも答えます。", "二度目はありません。"])
    body = json.dumps(event_callback(mention("こんにちは", ts=ROOT), event_id="EvHttp"))

    status, _, took = await post(url, body, signed_headers(body, SECRET))
    [reply] = await replied(fake, adapter)
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    again, _, _ = await post(url, body, {**signed_headers(body, SECRET), **retry})
    await settle(adapter)

    assert (status, again) == (200, 200)
    assert took < 3.0
    assert reply.args["thread_ts"] == ROOT
    assert fake.message_text(reply.args["ts"]) == "HTTPでも答えます。"
    assert len(fake.posts()) == 1 and len(app.scripted.prompts) == 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body: (body, signed_headers(body, "wrong-secret")), id="wrong-secret"),
        pytest.param(
            lambda body: (body.replace("こんにちは", "乗っ取り"), signed_headers(body, SECRET)),
            id="tampered-body",
        ),
        pytest.param(
            lambda body: (body, signed_headers(body, SECRET, timestamp=int(time.time()) - 600)),
            id="stale-timestamp",
        ),
        pytest.param(lambda body: (body, {}), id="unsigned"),
    ],
)
async def test_a_request_with_a_bad_signature_is_rejected(http_app, fake, forge):
    app, adapter, url = await http_app(["答えてはいけません。"])
    body = json.dumps(
        event_callback(mention("こんにちは", ts=ROOT), event_id="EvForged"), ensure_ascii=False
    )
    sent, headers = forge(body)

    status, _, _ = await post(url, sent, headers)
    await settle(adapter)

    assert status == 401
    assert not fake.posts() and not app.scripted.prompts


async def test_the_url_verification_challenge_is_answered(http_app, fake):
    _, _, url = await http_app([])
    body = json.dumps(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV", "type": "url_verification"}
    )
    status, text, _ = await post(url, body, signed_headers(body, SECRET))
    assert status == 200 and "3eZbrw1aBm2rZgRNFdxV" in text


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param("UADMIN", {"response_type": "in_channel"}, id="admin"),
        pytest.param("U0ALICE", {"response_type": "ephemeral", "text": REFUSAL}, id="member"),
    ],
)
async def test_the_slash_command_over_http(http_app, fake, user, expected):
    app, adapter, url = await http_app([])
    body = form_body(
        slash_command("persona concierge", user=user, response_url=f"{fake.url}/respond/9")
    )

    status, text, took = await post(
        url, body, signed_headers(body, SECRET), "application/x-www-form-urlencoded"
    )
    await fake.wait_for(lambda: fake.responses)
    await settle(adapter)

    assert status == 200 and text == "" and took < 3.0
    [response] = fake.responses
    assert expected.items() <= response.items()
    persona = app.repository.channel_settings(ConversationKey("slack", TEAM, "C0CHAN")).persona
    assert persona == ("concierge" if user == "UADMIN" else None)


async def test_serve_runs_socket_mode_until_cancelled(make_app, fake, monkeypatch):
    app = await make_app(
        ["serve から答えます。"], slack_bot_token="xoxb-t", slack_app_token="xapp-t"
    )
    made: list[SlackAdapter] = []

    def adapter_for_fake(app: Any) -> SlackAdapter:
        made.append(SlackAdapter(app, api_base_url=fake.api_url))
        return made[0]

    monkeypatch.setattr(slack_adapter, "SlackAdapter", adapter_for_fake)
    task = asyncio.create_task(slack_adapter.serve(app))
    await fake.wait_connected()
    envelope = await fake.send_envelope("events_api", event_callback(mention("やあ", ts=ROOT)))
    await fake.wait_ack(envelope)
    await fake.wait_for(fake.posts)
    await settle(made[0])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)

    assert fake.message_text(fake.posts()[0].args["ts"]) == "serve から答えます。"
    await fake.wait_for(lambda: not fake.connected)  # serve() closed the websocket


@pytest.mark.parametrize(
    ("settings", "needs"),
    [
        pytest.param({"slack_mode": "socket"}, "SLACK_APP_TOKEN", id="socket-without-app-token"),
        pytest.param({"slack_mode": "http"}, "SLACK_SIGNING_SECRET", id="http-without-secret"),
    ],
)
async def test_serve_says_which_setting_is_missing(make_app, settings, needs):
    app = await make_app([], slack_bot_token="xoxb-t", **settings)
    with pytest.raises(SlackConfigError, match=needs):
        await asyncio.wait_for(slack_adapter.serve(app), WAIT_S)


def test_the_adapter_needs_a_bot_token():
    app = type("FakeApp", (), {"settings": type("S", (), {"slack_bot_token": None})()})()
    with pytest.raises(SlackConfigError, match="SLACK_BOT_TOKEN"):
        SlackAdapter(app)  # type: ignore[arg-type]


@BOTH_DATABASES
async def test_two_processes_share_joined_threads_through_the_database(http_app, fake):
    # Two bot processes on one database (two apps, two adapters): one joins a thread, the
    # other answers a plain reply in it, and joins by both are kept.
    first, first_adapter, first_url = await http_app(["一つ目。", "三つ目。"])
    second, second_adapter, second_url = await http_app(["二つ目。", "四つ目。"])

    async def send(url: str, event: dict, event_id: str) -> None:
        body = json.dumps(event_callback(event, event_id=event_id))
        status, _, _ = await post(url, body, signed_headers(body, SECRET))
        assert status == 200

    other = "1700000500.000100"
    # The second process has looked at the channel before the first joined anything.
    await send(second_url, message("独り言", ts="1700000001.1", thread_ts=ROOT), "Ev0")
    await settle(second_adapter)
    await send(first_url, mention("はじめまして", ts=ROOT), "Ev1")
    await send(second_url, mention("別の話", ts=other), "Ev2")  # joined at the same time
    await replied(fake, first_adapter, 2)
    await settle(second_adapter)

    await send(second_url, message("続き", ts="1700000002.1", thread_ts=ROOT), "Ev3")
    await send(first_url, message("そちらも続き", ts="1700000501.1", thread_ts=other), "Ev4")
    posts = await replied(fake, second_adapter, 4)
    await settle(first_adapter)

    assert sorted(p.args["thread_ts"] for p in posts) == sorted([ROOT, ROOT, other, other])
    assert "続き" in second.scripted.prompts[1] and "はじめまして" in second.scripted.prompts[1]
    assert "そちらも続き" in first.scripted.prompts[1]
