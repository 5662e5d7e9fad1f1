"""The reply sink and the adapter's memory of people against the fake Web API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.directory import UserDirectory
from adapters.slack.sink import STREAMING_MARKER, SlackReplySink
from tests.platforms.slack_fake_server import FakeSlack, fake_slack


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=fake.api_url, timeout=5)


def sink(client: AsyncWebClient, clock: Clock, limit: int = 3000) -> SlackReplySink:
    return SlackReplySink(client, "C0CHAN", "1.0", interval_s=1.0, limit=limit, clock=clock)


async def test_updates_are_throttled_and_the_final_text_is_clean(client, fake):
    clock = Clock()
    reply = sink(client, clock)
    await reply.update("こん")  # shown at once
    clock.now += 0.5
    await reply.update("こんにち")  # too soon: skipped
    clock.now += 0.6
    await reply.update("こんにちは")
    await reply.finish("こんにちは。")

    [post] = fake.posts()
    assert post.args["thread_ts"] == "1.0"
    assert fake.shown(post.args["ts"]) == [
        "こん" + STREAMING_MARKER,
        "こんにちは" + STREAMING_MARKER,
        "こんにちは。",
    ]


async def test_a_finish_without_updates_posts_once(client, fake):
    await sink(client, Clock()).finish("すぐ終わる返事。")
    assert [c.method for c in fake.calls] == ["chat.postMessage"]


async def test_a_long_reply_continues_in_new_messages_and_leftovers_are_deleted(client, fake):
    clock = Clock()
    reply = sink(client, clock, limit=40)
    sentence = "これは十文字の文です。"  # 33 bytes: one per message at this limit
    await reply.update(sentence * 3)
    assert len(fake.posts()) == 3
    clock.now += 2
    await reply.finish(sentence + "短くなりました。")  # post-processing shortened it

    posts = fake.posts()
    assert len(posts) == 3
    assert fake.message_text(posts[0].args["ts"]) == sentence
    assert fake.message_text(posts[1].args["ts"]) == "短くなりました。"
    [deleted] = fake.api("chat.delete")
    assert deleted.args["ts"] == posts[2].args["ts"]


async def test_a_failed_final_edit_posts_the_reply_anew(client, fake):
    reply = sink(client, Clock())
    await reply.update("途中")
    fake.errors["chat.update"] = "message_not_found"
    await reply.finish("最後まで届く返事。")
    assert [p.args["text"] for p in fake.posts()] == [
        "途中" + STREAMING_MARKER,
        "最後まで届く返事。",
    ]


async def test_a_failed_streaming_edit_does_not_stop_the_reply(client, fake):
    clock = Clock()
    reply = sink(client, clock)
    await reply.update("途中")
    fake.errors["chat.update"] = "ratelimited_but_not_429"
    clock.now += 2
    await reply.update("途中まで")  # logged, not raised
    del fake.errors["chat.update"]
    await reply.finish("完成。")
    assert fake.message_text(fake.posts()[0].args["ts"]) == "完成。"


async def test_users_are_looked_up_once_and_refreshed_after_the_ttl(client, fake):
    fake.add_user("U0CAROL", "キャロル", is_admin=True)
    clock = Clock()
    users = UserDirectory(client, ttl_s=60, clock=clock)
    first = await users.get("U0CAROL")
    again = await users.get("U0CAROL")
    clock.now += 61
    fake.add_user("U0CAROL", "キャロル2")
    refreshed = await users.get("U0CAROL")

    assert (first.name, first.is_workspace_admin) == ("キャロル", True)
    assert again == first
    assert (refreshed.name, refreshed.is_workspace_admin) == ("キャロル2", False)
    assert len(fake.api("users.info")) == 2
    assert await users.names(["U0CAROL", "U0NOBODY"]) == {"U0CAROL": "キャロル2"}
