"""The real discord.py client against a fake Discord on 127.0.0.1 (REST and gateway), with the
real app behind it (SQLite, worker thread, a scripted model through the demo tokenizer)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import discord
import discord.gateway
import discord.http
import pytest
import yarl

from adapters.discord.commands import NO_CONTENT_INTENT_NOTE, NOT_ADMIN, NOT_HERE
from adapters.discord.run import create_bot, serve
from adapters.discord.split import split_reply
from bot.app.bootstrap import App
from bot.chat.commands import COMMANDS, RESET_ADMIN_ONLY
from bot.messages import ConversationKey, IncomingMessage, ReplySink
from bot.models import catalogue
from tests.platforms.discord_fake_server import (
    ADMIN_ROLE_ID,
    ALICE,
    APP_ID,
    BOB,
    BOT_ID,
    BOT_ROLE_ID,
    BOT_USER,
    CAROL,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    MESSAGE_CONTENT,
    OTHER_BOT,
    OTHER_CHANNEL_ID,
    THREAD_ID,
    FakeDiscord,
    interaction,
    message,
    thread_channel,
)

EDIT_INTERVAL_S = 0.2
WAIT_S = 10.0  # generous for a slow CI machine; a passing step takes well under a second
GUILD_INTENTS = 1 | 1 << 9 | 1 << 12  # guilds, guild messages, direct messages
KEY = ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID))


class ObservedHandler:
    """Wraps the conversation manager: records what the adapter handed over and signals when
    each reply is complete (the sink's final message is on the fake server by then)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.received: list[IncomingMessage] = []
        self._done: asyncio.Queue[IncomingMessage] = asyncio.Queue()

    async def handle(self, message: IncomingMessage, sink: ReplySink) -> None:
        self.received.append(message)
        try:
            await self.inner.handle(message, sink)
        finally:
            self._done.put_nowait(message)

    async def next_done(self) -> IncomingMessage:
        return await asyncio.wait_for(self._done.get(), WAIT_S)


@dataclass
class Running:
    app: App
    bot: discord.Client
    handler: ObservedHandler
    fake: FakeDiscord

    async def say(self, payload: dict) -> IncomingMessage:
        """Send MESSAGE_CREATE and wait until the bot has finished answering it."""
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        done = await self.handler.next_done()
        assert done.text is not None
        return done

    async def command(self, payload: dict, responses: int = 1) -> list[dict]:
        """Send INTERACTION_CREATE; wait for `responses` callbacks plus follow-ups."""
        before = len(self.fake.callbacks()) + len(self.fake.followups())
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        await self.fake.wait_for(
            lambda: len(self.fake.callbacks()) + len(self.fake.followups()) >= before + responses
        )
        everything = [r.body for r in self.fake.requests if _is_response(r.path)]
        return everything[before:]


async def drain_events() -> None:
    """Let the event handlers discord.py scheduled while closing (ready, disconnect) run, so none
    is left unawaited when the test's event loop ends."""
    events = [t for t in asyncio.all_tasks() if t.get_name().startswith("discord.py:")]
    if events:
        await asyncio.wait(events, timeout=WAIT_S)


def _is_response(path: str) -> bool:
    return path.endswith("/callback") or path.startswith("/webhooks/")


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    # A plain Client connects to DEFAULT_GATEWAY; sharded clients ask GET /gateway/bot, which
    # the fake answers with the same URL.
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url)
    )
    yield server
    await server.close()
    assert server.unhandled == [], "the bot called routes the fake does not know"


@pytest.fixture
async def start_bot(
    make_app: Callable[..., Any], fake: FakeDiscord
) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[discord.Client, asyncio.Task[None]]] = []

    async def start(
        replies: list[str] | None = None, *, script_kwargs: dict | None = None, **settings: Any
    ) -> Running:
        settings.setdefault("discord_token", "fake-token")
        settings.setdefault("discord_command_guild_ids", [str(GUILD_ID)])
        app = await make_app(replies, script_kwargs=script_kwargs, **settings)
        handler = ObservedHandler(app.manager)
        bot = create_bot(
            app, handler=handler, edit_interval_s=EDIT_INTERVAL_S, guild_ready_timeout=0.05
        )
        task = asyncio.create_task(bot.start("fake-token"))
        started.append((bot, task))
        await asyncio.wait_for(fake.ready.wait(), WAIT_S)
        return Running(app, bot, handler, fake)

    yield start
    for bot, task in started:
        await bot.close()
        await asyncio.wait_for(task, WAIT_S)
    await drain_events()


def pings_nobody(body: dict) -> bool:
    """What AllowedMentions.none() sends: nothing parsed from the text, no listed users or
    roles, and (on a reply) no ping for the author of the message replied to."""
    allowed = body["allowed_mentions"]
    return (
        allowed["parse"] == []
        and not allowed.get("users")
        and not allowed.get("roles")
        and not allowed.get("replied_user")
    )


def mention(text: str = "") -> str:
    return f"<@{BOT_ID}> {text}"


def reply_text(posted: list) -> str:
    return "\n".join(m.content for m in posted)


# --- logging in and registering commands ----------------------------------------------------


async def test_serve_logs_in_and_syncs_global_commands(
    make_app: Callable[..., Any], fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters")
    app = await make_app(replies=[], discord_token="secret-token")
    task = asyncio.create_task(serve(app))
    try:
        await asyncio.wait_for(fake.ready.wait(), WAIT_S)
        assert fake.identify is not None
        assert fake.identify["token"] == "secret-token"
        assert fake.identify["intents"] == GUILD_INTENTS  # no privileged intent by default
        (sync,) = fake.requests_to("PUT", f"/applications/{APP_ID}/commands")
        assert [c["name"] for c in sync.body] == ["chat"]
        assert "message content intent is off" in caplog.text
        assert "secret-token" not in caplog.text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)
        await drain_events()
    assert not any("guilds" in r.path for r in fake.requests)  # global only, no guild sync


async def test_serve_explains_a_refused_token(
    make_app: Callable[..., Any], fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.accepted_token = "the-real-token"
    app = await make_app(replies=[], discord_token="a-stale-token")
    with pytest.raises(discord.LoginFailure):
        await asyncio.wait_for(serve(app), WAIT_S)
    await drain_events()
    assert "Discord refused DISCORD_TOKEN" in caplog.text
    assert "a-stale-token" not in caplog.text


async def test_serve_explains_a_missing_privileged_intent(
    make_app: Callable[..., Any], fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    fake.message_content_enabled = False
    app = await make_app(replies=[], discord_token="t", discord_message_content=True)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await asyncio.wait_for(serve(app), WAIT_S)
    await drain_events()
    assert "'Message Content Intent' is not enabled" in caplog.text


async def test_serve_reconnects_a_dropped_gateway_connection_and_logs_it(
    make_app: Callable[..., Any], fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    """Once running, a lost connection is not the end: discord.py reconnects with backoff."""
    caplog.set_level(logging.INFO, logger="adapters")
    app = await make_app(replies=[], discord_token="t")
    task = asyncio.create_task(serve(app))
    try:
        await asyncio.wait_for(fake.ready.wait(), WAIT_S)
        first = fake._ws
        assert first is not None
        await first.close()  # the gateway goes away

        async def reconnected() -> None:
            while fake._ws is first:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(reconnected(), WAIT_S)
        assert "Discord: connection lost; reconnecting" in caplog.text
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)
        await drain_events()


async def test_slash_commands_register_in_the_configured_guild(start_bot, fake) -> None:
    await start_bot(replies=[])
    assert fake.requests_to("PUT", f"/applications/{APP_ID}/commands") == []
    (sync,) = fake.requests_to("PUT", f"/applications/{APP_ID}/guilds/{GUILD_ID}/commands")
    (chat,) = sync.body
    subcommands = {option["name"]: option for option in chat["options"]}
    # The chat's command table, plus Discord's own chat-channel toggle.
    assert set(subcommands) == {*COMMANDS, "channel"}
    assert all(option["type"] == 1 for option in subcommands.values())
    assert subcommands["model"]["options"][0]["autocomplete"] is True
    assert subcommands["persona"]["options"][0]["autocomplete"] is True
    assert subcommands["set"]["options"][0]["autocomplete"] is True
    (temperature,) = subcommands["temperature"]["options"]
    assert temperature["type"] == 10 and temperature["max_value"] == 5.0  # a number, 0-5
    (length,) = subcommands["length"]["options"]
    assert length["type"] == 4 and length["max_value"] == 2048
    (on,) = subcommands["channel"]["options"]
    assert on["type"] == 5 and on["required"] is True


# --- chatting --------------------------------------------------------------------------------


async def test_mention_gets_a_streamed_reply_whose_final_text_is_clean(start_bot, fake) -> None:
    script = (
        "こんにちは!<NL>今日はいい天気ですね。<NL>散歩にでも行きましょうか。<NL>ユーザー: 嘘の続き"
    )
    bot = await start_bot(replies=[script], script_kwargs={"eos": False, "delay_s": 0.04})
    trigger = message(
        BOB, mention(f"<@{CAROL['id']}> さんにもあいさつして"), mentions=(BOT_USER, CAROL)
    )
    received = await bot.say(trigger)

    assert received.key == KEY
    assert received.text == "キャロちゃん さんにもあいさつして"  # bot mention gone, nick used
    assert received.author_id == BOB["id"] and received.author_name == "ボブ"
    assert not received.is_admin
    (posted,) = fake.messages_in(CHANNEL_ID)
    assert posted.content == "こんにちは!\n今日はいい天気ですね。\n散歩にでも行きましょうか。"
    assert len(posted.versions) >= 3, "the reply should grow in place while it is generated"
    for version in posted.versions:
        assert "<NL>" not in version and "ユーザー" not in version
        assert posted.content.startswith(version)
    # Edits while streaming are throttled (tokens arrive every 40 ms, edits come ~200 ms
    # apart; half that allows for network jitter). The final edit may follow the last at once.
    streaming = posted.edit_times[:-1]
    gaps = [later - earlier for earlier, later in itertools.pairwise(streaming)]
    assert gaps and all(gap >= EDIT_INTERVAL_S / 2 for gap in gaps), gaps
    # Typing shows first; the answer replies to the question without pinging its author.
    (create,) = fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages")
    typing = fake.requests_to("POST", f"/channels/{CHANNEL_ID}/typing")
    assert typing and typing[0].at <= create.at
    assert str(create.body["message_reference"]["message_id"]) == trigger["id"]
    assert pings_nobody(create.body) and create.body["allowed_mentions"]["replied_user"] is False


def _long_script() -> str:
    """About 2,400 characters with a code block straddling the 2,000-character mark. The demo
    tokenizer learned these corpus phrases as single pieces (after a space), so the reply fits
    the demo model's 1,024-token window; each sentence strings three of them in its own order,
    so no sentence repeats and repetition-collapsing keeps them all."""
    phrases = [
        "マスクとメガネで完全防備だよ笑",
        "かける前に聞いてほしい派です笑",
        "三日坊主にならないようにね笑",
        "草生える",
    ]
    sentences = [" " + " ".join(combo) + "。" for combo in itertools.product(phrases, repeat=3)]
    cycle = [s + "<NL>" if i % 4 == 3 else s for i, s in enumerate(sentences)]
    code = "<NL>```<NL>" + "".join(f"x{i} = {i}<NL>" for i in range(6)) + "```<NL>"
    parts, length = [], 0
    for index in range(1000):
        if length > 1975 and code not in parts:
            parts.append(code)
        parts.append(cycle[index % len(cycle)])
        length += len(parts[-1].replace("<NL>", "\n"))
        if length > 2400:
            break
    return "".join(parts)


async def test_a_long_reply_is_split_at_sentence_ends_never_inside_code(start_bot, fake) -> None:
    bot = await start_bot(replies=[_long_script()], max_new_tokens=600)
    await bot.say(message(BOB, mention("長い話をして")))

    history = bot.app.repository.recent_messages(bot.app.repository.active_conversation(KEY))
    final = history[-1].text
    assert history[-1].role == "assistant" and len(final) > 2000
    posted = [m.content for m in fake.messages_in(CHANNEL_ID)]
    assert posted == split_reply(final)
    assert len(posted) >= 2 and all(len(chunk) <= 2000 for chunk in posted)
    assert re.sub(r"\s", "", "".join(posted)) == re.sub(r"\s", "", final)
    for chunk in posted:
        assert chunk.count("```") % 2 == 0, "a code block was cut in two"
    for chunk in posted[:-1]:
        after = final[final.index(chunk) + len(chunk) :]
        assert re.search(r"[。!?」）]$", chunk) or after.startswith("\n"), chunk[-20:]
    (with_code,) = [chunk for chunk in posted if "```" in chunk]
    assert "x0 = 0" in with_code and "x5 = 5" in with_code  # the whole block, in one message
    assert with_code is not posted[0], "the block straddled 2,000 and must move to the next one"
    # Only the first message replies to the question.
    creates = fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages")
    assert "message_reference" in creates[0].body
    assert all("message_reference" not in c.body for c in creates[1:])


async def test_a_dm_is_answered(start_bot, fake) -> None:
    bot = await start_bot(replies=["はい、DMでも話せます。"])
    received = await bot.say(message(BOB, "こんにちは", dm=True))
    assert received.key == ConversationKey("discord", "dm", str(DM_CHANNEL_ID))
    assert received.text == "こんにちは"
    (posted,) = fake.messages_in(DM_CHANNEL_ID)
    assert posted.content == "はい、DMでも話せます。"


async def test_a_thread_is_its_own_conversation_under_its_channel(start_bot, fake) -> None:
    bot = await start_bot(replies=["スレッドです。"])
    received = await bot.say(message(BOB, mention("スレッドで"), channel_id=THREAD_ID))
    assert received.key == ConversationKey(
        "discord", str(GUILD_ID), str(CHANNEL_ID), str(THREAD_ID)
    )
    (posted,) = fake.messages_in(THREAD_ID)
    assert posted.content == "スレッドです。"
    assert fake.messages_in(CHANNEL_ID) == []


async def test_a_reply_to_the_bot_is_answered_without_a_mention(start_bot, fake) -> None:
    bot = await start_bot(replies=["続きです。"])
    earlier = message(BOT_USER, "前の返事です。")
    received = await bot.say(message(BOB, "続けて", replying_to=earlier))
    assert received.text == "続けて"
    assert fake.messages_in(CHANNEL_ID)[0].content == "続きです。"


async def test_the_bots_own_role_mention_counts_as_a_mention(start_bot, fake) -> None:
    bot = await start_bot(replies=["はい。"])
    received = await bot.say(
        message(BOB, f"<@&{BOT_ROLE_ID}> 聞こえる?", role_mentions=(BOT_ROLE_ID,))
    )
    assert received.text == "聞こえる?"


async def test_other_bots_itself_webhooks_and_unaddressed_messages_are_ignored(
    start_bot, fake
) -> None:
    bot = await start_bot(replies=["人間にだけ答えます。"])
    for ignored in (
        message(OTHER_BOT, mention("ボット同士で話そう"), mentions=(BOT_USER,)),
        message(BOT_USER, mention("自分に話しかける"), mentions=(BOT_USER,)),
        message(BOB, mention("ウェブフック"), mentions=(BOT_USER,), webhook_id=42),
        message(BOB, "誰にも話しかけていない"),
        message(BOB, ""),  # what arrives without the message-content intent
    ):
        await fake.dispatch("MESSAGE_CREATE", ignored)
    # Events are handled in order, so once this reply is done the ones before were seen.
    await bot.say(message(BOB, mention("こんにちは"), mentions=(BOT_USER,)))
    assert [m.text for m in bot.handler.received] == ["こんにちは"]
    assert len(bot.app.scripted.prompts) == 1
    assert len(fake.messages_in(CHANNEL_ID)) == 1


async def test_model_output_with_everyone_pings_nobody(start_bot, fake) -> None:
    # Ids without long runs of one digit: post-processing collapses "0000…" as repetition.
    script = "@everyone と @here と <@123456789012345678> と <@&234567890123456789> にお知らせ。"
    bot = await start_bot(replies=[script], script_kwargs={"delay_s": 0.01})
    await bot.say(message(BOB, mention("みんなを呼んで")))
    (posted,) = fake.messages_in(CHANNEL_ID)
    assert "@everyone" in posted.content and "<@123456789012345678>" in posted.content
    writes = fake.requests_to("POST", f"/channels/{CHANNEL_ID}/messages") + [
        r for r in fake.requests if r.method == "PATCH"
    ]
    assert writes
    for request in writes:
        assert pings_nobody(request.body), request


async def test_the_rate_limit_answers_politely(start_bot, fake) -> None:
    bot = await start_bot(replies=["一つ目の返事。"], user_rate_limit_per_minute=1)
    await bot.say(message(BOB, mention("一回目")))
    await bot.say(message(BOB, mention("二回目")))
    first, second = fake.messages_in(CHANNEL_ID)
    assert first.content == "一つ目の返事。"
    assert "ペースが速い" in second.content


async def test_channel_allow_list_ignores_other_channels(start_bot, fake) -> None:
    bot = await start_bot(replies=["はい。"], discord_channel_ids=[str(OTHER_CHANNEL_ID)])
    await fake.dispatch("MESSAGE_CREATE", message(BOB, mention("ここは対象外")))
    await bot.say(message(BOB, mention("ここは対象"), channel_id=OTHER_CHANNEL_ID))
    assert [m.text for m in bot.handler.received] == ["ここは対象"]
    (refusal,) = await bot.command(interaction(ALICE, "status", administrator=True))
    assert refusal["data"]["content"] == NOT_HERE and refusal["data"]["flags"] == 64


# --- slash commands --------------------------------------------------------------------------


async def test_an_admin_role_switches_the_persona(start_bot, fake) -> None:
    bot = await start_bot(replies=["はーい!"], discord_admin_role_ids=[str(ADMIN_ROLE_ID)])
    deferred, followup = await bot.command(
        interaction(ALICE, "persona", {"name": "friendly"}), responses=2
    )
    assert deferred["type"] == 5  # an adapter check may wait for the busy model worker
    assert not deferred.get("data", {}).get("flags")  # the channel sees the change
    assert followup["content"] == "ペルソナを「フレンドリー」（friendly）にしました。"
    assert pings_nobody(followup)
    assert bot.app.repository.channel_settings(KEY).persona == "friendly"
    await bot.say(message(BOB, mention("元気?")))
    assert bot.app.personas.get("friendly").preamble in bot.app.scripted.prompts[-1]


async def test_a_non_admin_is_refused_ephemerally(start_bot, fake) -> None:
    bot = await start_bot(replies=[], discord_admin_role_ids=[str(ADMIN_ROLE_ID)])
    for subcommand, options in (
        ("persona", {"name": "friendly"}),
        ("model", {"name": "demo"}),
        ("channel", {"on": True}),
        ("temperature", {"value": 0.5}),
    ):
        (response,) = await bot.command(interaction(BOB, subcommand, options))
        assert response["type"] == 4
        assert response["data"]["content"] == NOT_ADMIN
        assert response["data"]["flags"] == 64  # ephemeral: only BOB sees it
    assert bot.app.repository.channel_settings(KEY).persona is None
    assert bot.app.repository.get_state("discord.chat_channels") is None
    assert not bot.app.scripted.prompts


async def test_loading_a_model_is_deferred_then_followed_up(start_bot, fake) -> None:
    bot = await start_bot(replies=[])
    deferred, followup = await bot.command(
        interaction(ALICE, "model", {"name": "demo"}, administrator=True), responses=2
    )
    assert deferred["type"] == 5  # "thinking…" within Discord's 3 seconds
    assert followup["content"].startswith("モデルを demo に切り替えました")
    assert pings_nobody(followup)


async def test_a_command_argument_with_a_lone_surrogate_is_repaired(start_bot, fake) -> None:
    """A broken JSON escape in an option (a lone "\\ud800") is repaired before the bot echoes
    it, as message text is."""
    bot = await start_bot(replies=[])
    _, followup = await bot.command(
        interaction(ALICE, "persona", {"name": "ない\ud800名前"}, administrator=True), responses=2
    )
    assert "ない\ufffd名前" in followup["content"]


async def test_autocomplete_offers_personas_and_models(start_bot, fake) -> None:
    bot = await start_bot(replies=[])
    (personas,) = await bot.command(interaction(BOB, "persona", {"name": ""}, focused="name"))
    assert personas["type"] == 8
    names = [choice["value"] for choice in personas["data"]["choices"]]
    assert names == [*bot.app.personas.names(), "none"]
    (typed,) = await bot.command(interaction(BOB, "persona", {"name": "FRI"}, focused="name"))
    assert [c["value"] for c in typed["data"]["choices"]] == ["friendly"]
    (models,) = await bot.command(interaction(BOB, "model", {"name": ""}, focused="name"))
    offered = [c["value"] for c in models["data"]["choices"]]
    assert offered == catalogue.model_names()[: len(offered)] and offered[0] == "demo"
    (typed,) = await bot.command(interaction(BOB, "model", {"name": "ppo"}, focused="name"))
    assert [c["value"] for c in typed["data"]["choices"]] == [
        name for name in catalogue.model_names() if "ppo" in name
    ]


async def test_everyone_can_stop_and_see_status_and_admins_reset(start_bot, fake) -> None:
    bot = await start_bot(replies=["覚えました。"])
    await bot.say(message(BOB, mention("覚えておいて")))
    (status,) = await bot.command(interaction(BOB, "status"))
    assert status["data"]["flags"] == 64
    assert "モデル: demo" in status["data"]["content"]
    assert "会話のメッセージ 2 件" in status["data"]["content"]
    assert "チャットチャンネル: オフ" in status["data"]["content"]
    (stop,) = await bot.command(interaction(BOB, "stop"))
    assert stop["data"]["content"] == "このチャンネルで生成中の返事はありません。"
    (refusal,) = await bot.command(interaction(BOB, "reset"))
    assert refusal["data"]["content"] == RESET_ADMIN_ONLY and refusal["data"]["flags"] == 64
    await bot.say(message(BOB, mention("/reset")))  # the text command is gated the same way
    assert fake.messages_in(CHANNEL_ID)[-1].content == RESET_ADMIN_ONLY
    conversation = bot.app.repository.active_conversation(KEY)
    assert bot.app.repository.count_messages(conversation) == 2
    deferred, done = await bot.command(interaction(ALICE, "reset", administrator=True), responses=2)
    assert deferred["type"] == 5
    assert done["content"].startswith("会話をリセットしました")
    conversation = bot.app.repository.active_conversation(KEY)
    assert bot.app.repository.count_messages(conversation) == 0


async def test_anyone_resets_their_own_dm(start_bot, fake) -> None:
    bot = await start_bot(replies=["覚えました。"])
    await bot.say(message(BOB, "覚えておいて", dm=True))
    dm_key = ConversationKey("discord", "dm", str(DM_CHANNEL_ID))
    _deferred, done = await bot.command(interaction(BOB, "reset", dm=True), responses=2)
    assert done["content"].startswith("会話をリセットしました")
    assert bot.app.repository.count_messages(bot.app.repository.active_conversation(dm_key)) == 0
    await bot.say(message(BOB, "/reset", dm=True))
    assert fake.messages_in(DM_CHANNEL_ID)[-1].content.startswith("会話をリセットしました")


async def test_reset_can_be_opened_to_everyone(start_bot, fake) -> None:
    bot = await start_bot(replies=[], reset_requires_admin=False)
    _deferred, done = await bot.command(interaction(BOB, "reset"), responses=2)
    assert done["content"].startswith("会話をリセットしました")


async def test_commands_work_in_a_dm(start_bot, fake) -> None:
    bot = await start_bot(replies=[])
    (status,) = await bot.command(interaction(BOB, "status", dm=True))
    assert "DM ではいつでも返事をします" in status["data"]["content"]
    (refusal,) = await bot.command(interaction(BOB, "persona", {"name": "friendly"}, dm=True))
    assert refusal["data"]["content"] == NOT_ADMIN
    dm_key = ConversationKey("discord", "dm", str(DM_CHANNEL_ID))
    assert bot.app.repository.channel_settings(dm_key).persona is None


async def test_a_chat_channel_answers_every_message_and_its_threads(start_bot, fake) -> None:
    bot = await start_bot(replies=["どうぞ。"] * 3, discord_message_content=True)
    assert fake.identify is not None
    assert fake.identify["intents"] == GUILD_INTENTS | MESSAGE_CONTENT
    (response,) = await bot.command(
        interaction(ALICE, "channel", {"on": True}, administrator=True)
    )
    content = response["data"]["content"]
    assert "すべてのメッセージに返事をします" in content
    assert NO_CONTENT_INTENT_NOTE not in content
    (response,) = await bot.command(
        interaction(ALICE, "temperature", {"value": 0.5}, administrator=True)
    )
    assert "temperature を 0.5" in response["data"]["content"]
    assert bot.app.repository.get_state("discord.chat_channels") == str(CHANNEL_ID)
    assert bot.app.repository.channel_settings(KEY).sampling == {"temperature": 0.5}

    await fake.dispatch(
        "MESSAGE_CREATE", message(BOB, "ここは普通のチャンネル", channel_id=OTHER_CHANNEL_ID)
    )
    await bot.say(message(BOB, "メンションなしで話しかける"))
    await bot.say(message(CAROL, "スレッドでも", channel_id=THREAD_ID))
    assert [m.text for m in bot.handler.received] == ["メンションなしで話しかける", "スレッドでも"]

    (off,) = await bot.command(
        interaction(
            ALICE,
            "channel",
            {"on": False},
            administrator=True,
            channel=thread_channel(THREAD_ID, CHANNEL_ID, "雑談スレッド"),
        )
    )  # from inside the thread: the flag belongs to the parent channel
    assert "メンションか返信にだけ" in off["data"]["content"]
    assert bot.app.repository.get_state("discord.chat_channels") == ""


async def test_marking_a_chat_channel_without_the_content_intent_warns(start_bot, fake) -> None:
    bot = await start_bot(replies=[], discord_admin_user_ids=[ALICE["id"]])
    (response,) = await bot.command(interaction(ALICE, "channel", {"on": True}))
    assert NO_CONTENT_INTENT_NOTE in response["data"]["content"]
