"""From raw Discord payload dicts to `IncomingMessage`: the payloads go through discord.py's own
parsers (a real ConnectionState, no mocks), then through the adapter's pure translation."""

from __future__ import annotations

from typing import Any

import discord
import pytest

from adapters.discord.access import Access, has_administrator
from adapters.discord.chat_channels import ChatChannels
from adapters.discord.commands import MAX_CHOICES, choices
from adapters.discord.translate import (
    UNKNOWN_USER,
    clean_text,
    conversation_key,
    reason_to_answer,
    to_incoming,
)
from bot.messages import ConversationKey
from tests.platforms.discord_fake_server import (
    ADMIN_ROLE_ID,
    ALICE,
    BOB,
    BOT_ID,
    BOT_ROLE_ID,
    BOT_USER,
    CAROL,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    GUILD_ID,
    MEMBER_ROLE_ID,
    OTHER_BOT,
    OTHER_CHANNEL_ID,
    THREAD_ID,
    guild,
    message,
    thread_channel,
)


class Gateway:
    """discord.py's ConnectionState fed payloads the way the gateway feeds it."""

    def __init__(self) -> None:
        self.client = discord.Client(intents=discord.Intents.none())
        self.state = self.client._connection
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.state.dispatch = lambda event, *args: self.events.append((event, args))
        self.state.user = discord.ClientUser(state=self.state, data=BOT_USER)
        self.state.parse_guild_create(guild())

    def message(self, payload: dict) -> discord.Message:
        self.state.parse_message_create(payload)
        event, (parsed,) = self.events[-1]
        assert event == "message"
        return parsed


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


def answer(gateway: Gateway, payload: dict, **overrides: Any) -> str | None:
    options = {"chat_channels": set(), "allow_dms": True} | overrides
    return reason_to_answer(
        gateway.message(payload), me_id=BOT_ID, my_role_id=BOT_ROLE_ID, **options
    )


BOT_MESSAGE = message(BOT_USER, "前の返事です。")
OTHERS_MESSAGE = message(CAROL, "キャロルの発言")

REASONS = [
    ("mention", message(BOB, f"<@{BOT_ID}> こんにちは"), {}, "mention"),
    ("old-style mention", message(BOB, f"<@!{BOT_ID}> やあ"), {}, "mention"),
    ("the bot's role", message(BOB, f"<@&{BOT_ROLE_ID}> やあ"), {}, "mention"),
    ("reply to the bot", message(BOB, "続けて", replying_to=BOT_MESSAGE), {}, "reply"),
    ("reply to someone else", message(BOB, "へえ", replying_to=OTHERS_MESSAGE), {}, None),
    ("unaddressed", message(BOB, "ひとりごと"), {}, None),
    ("other people only", message(BOB, f"<@{CAROL['id']}> どう?"), {}, None),
    ("@everyone is not a mention", message(BOB, "@everyone 集合"), {}, None),
    ("chat channel", message(BOB, "ひとりごと"), {"chat_channels": {CHANNEL_ID}}, "chat channel"),
    (
        "thread of a chat channel",
        message(BOB, "スレッド", channel_id=THREAD_ID),
        {"chat_channels": {CHANNEL_ID}},
        "chat channel",
    ),
    (
        "another channel",
        message(BOB, "ひとりごと", channel_id=OTHER_CHANNEL_ID),
        {"chat_channels": {CHANNEL_ID}},
        None,
    ),
    ("dm", message(BOB, "こんにちは", dm=True), {}, "dm"),
    ("dm switched off", message(BOB, "こんにちは", dm=True), {"allow_dms": False}, None),
    ("another bot", message(OTHER_BOT, f"<@{BOT_ID}> やあ"), {}, None),
    ("itself", message(BOT_USER, f"<@{BOT_ID}> やあ"), {}, None),
    ("webhook", message(BOB, f"<@{BOT_ID}> やあ", webhook_id=7), {}, None),
    ("content hidden", message(BOB, ""), {"chat_channels": {CHANNEL_ID}}, None),
    ("pin notice", message(BOB, f"<@{BOT_ID}>", type=6), {}, None),
]


@pytest.mark.parametrize(
    ("payload", "overrides", "expected"),
    [case[1:] for case in REASONS],
    ids=[case[0] for case in REASONS],
)
def test_reason_to_answer(gateway: Gateway, payload: dict, overrides: dict, expected) -> None:
    assert answer(gateway, payload, **overrides) == expected


def test_a_mention_becomes_an_incoming_message(gateway: Gateway) -> None:
    content = (
        f"<@{BOT_ID}> <@{CAROL['id']}> と <@{BOB['id']}> と <@&{MEMBER_ROLE_ID}> に "
        f"<#{OTHER_CHANNEL_ID}> で <:smile:123456> って伝えて"
    )
    parsed = gateway.message(message(ALICE, content))
    incoming = to_incoming(
        parsed,
        me_id=BOT_ID,
        my_role_id=BOT_ROLE_ID,
        is_admin=True,
    )
    assert incoming.key == ConversationKey("discord", str(GUILD_ID), str(CHANNEL_ID))
    assert incoming.text == "キャロちゃん と ボブ と メンバー に #random で :smile: って伝えて"
    assert incoming.author_id == ALICE["id"]
    assert incoming.author_name == "アリス管理人"  # the server nickname wins
    assert incoming.is_admin
    assert incoming.sent_at == parsed.created_at  # from the snowflake id, in UTC
    assert incoming.sent_at.tzinfo is not None


def test_a_thread_keeps_its_own_history_under_its_parent(gateway: Gateway) -> None:
    incoming = to_incoming(
        gateway.message(message(BOB, f"<@{BOT_ID}>やあ", channel_id=THREAD_ID)),
        me_id=BOT_ID,
        my_role_id=BOT_ROLE_ID,
        is_admin=False,
    )
    assert incoming.key == ConversationKey(
        "discord", str(GUILD_ID), str(CHANNEL_ID), str(THREAD_ID)
    )
    assert incoming.text == "やあ"
    assert incoming.author_name == "ボブ"  # no nickname: the global display name


def test_a_dm_is_keyed_by_its_channel(gateway: Gateway) -> None:
    incoming = to_incoming(
        gateway.message(message(BOB, "こんにちは", dm=True)),
        me_id=BOT_ID,
        my_role_id=None,
        is_admin=False,
    )
    assert incoming.key == ConversationKey("discord", "dm", str(DM_CHANNEL_ID))
    assert incoming.text == "こんにちは"


def test_a_thread_missing_from_the_cache_uses_the_fetched_channel(gateway: Gateway) -> None:
    unknown_thread = 1300000000000000077
    parsed = gateway.message(message(BOB, f"<@{BOT_ID}> はい", channel_id=unknown_thread))
    assert isinstance(parsed.channel, discord.PartialMessageable)
    fetched = discord.Thread(
        guild=parsed.guild,  # type: ignore[arg-type]
        state=gateway.state,
        data=thread_channel(unknown_thread, CHANNEL_ID, "古いスレッド"),  # type: ignore[arg-type]
    )
    incoming = to_incoming(
        parsed, me_id=BOT_ID, my_role_id=BOT_ROLE_ID, is_admin=False, channel=fetched
    )
    assert incoming.key.thread == str(unknown_thread)
    assert incoming.key.channel == str(CHANNEL_ID)
    assert conversation_key(GUILD_ID, parsed.channel).channel == str(unknown_thread)


CLEAN = [
    ("<@1> おはよう", "おはよう"),
    ("おはよう <@1>", "おはよう"),
    ("ねえ <@1> 元気?", "ねえ 元気?"),
    ("<@!1>\n二行目", "二行目"),
    ("<@&9> 役割で呼ぶ", "役割で呼ぶ"),
    ("<@2> さん", "佐藤 さん"),
    ("<@3> さん", f"{UNKNOWN_USER} さん"),
    ("<@&8> の人", "運営 の人"),
    ("<#5> へ", "#雑談 へ"),
    ("<a:dance:77> <:ok:78>", ":dance: :ok:"),
    ("```\n<@1> in code\n  indented\n```", "```\nin code\n  indented\n```"),
    ("@everyone と @here", "@everyone と @here"),
    ("<@1>", ""),
]


@pytest.mark.parametrize(("content", "expected"), CLEAN)
def test_clean_text(content: str, expected: str) -> None:
    cleaned = clean_text(
        content,
        drop_users={1},
        drop_roles={9},
        users={2: "佐藤"},
        roles={8: "運営"},
        channels={5: "雑談"},
    )
    assert cleaned == expected


def members(gateway: Gateway) -> dict[str, discord.Member]:
    people = {}
    for person in (ALICE, BOB, CAROL):
        author = gateway.message(message(person, "x")).author
        assert isinstance(author, discord.Member)
        people[person["username"]] = author
    return people


ACCESS = [
    # (access, guild, channels, person) -> allowed
    (Access(), GUILD_ID, (CHANNEL_ID,), "bob", True),
    (Access(guild_ids=frozenset({"1"})), GUILD_ID, (CHANNEL_ID,), "bob", False),
    (Access(guild_ids=frozenset({str(GUILD_ID)})), GUILD_ID, (CHANNEL_ID,), "bob", True),
    (Access(channel_ids=frozenset({str(OTHER_CHANNEL_ID)})), GUILD_ID, (CHANNEL_ID,), "bob", False),
    (
        Access(channel_ids=frozenset({str(CHANNEL_ID)})),
        GUILD_ID,
        (THREAD_ID, CHANNEL_ID),
        "bob",
        True,
    ),
    (Access(role_ids=frozenset({str(MEMBER_ROLE_ID)})), GUILD_ID, (CHANNEL_ID,), "bob", True),
    (Access(role_ids=frozenset({str(MEMBER_ROLE_ID)})), GUILD_ID, (CHANNEL_ID,), "carol", False),
    (Access(user_ids=frozenset({CAROL["id"]})), GUILD_ID, (CHANNEL_ID,), "carol", True),
    (Access(user_ids=frozenset({CAROL["id"]})), GUILD_ID, (CHANNEL_ID,), "bob", False),
    (Access(user_ids=frozenset({CAROL["id"]})), GUILD_ID, (CHANNEL_ID,), "alice", True),  # admin
    (Access(allow_dms=False), None, (DM_CHANNEL_ID,), "bob", False),
    (Access(channel_ids=frozenset({"1"})), None, (DM_CHANNEL_ID,), "bob", True),
]


@pytest.mark.parametrize(("access", "guild_id", "channels", "person", "allowed"), ACCESS)
def test_allow_lists(gateway: Gateway, access: Access, guild_id, channels, person, allowed) -> None:
    user = members(gateway)[person]
    is_admin = access.is_admin(user, administrator=has_administrator(user))
    permitted = access.allows_place(guild_id, channels) and access.allows_person(
        user, is_admin=is_admin
    )
    assert permitted is allowed


def test_admins(gateway: Gateway) -> None:
    people = members(gateway)
    assert has_administrator(people["alice"])  # her role grants Administrator
    assert not has_administrator(people["bob"])
    by_role = Access(admin_role_ids=frozenset({str(MEMBER_ROLE_ID)}))
    assert by_role.is_admin(people["bob"]) and not by_role.is_admin(people["carol"])
    by_id = Access(admin_user_ids=frozenset({CAROL["id"]}))
    assert by_id.is_admin(people["carol"]) and not by_id.is_admin(people["bob"])
    assert Access().is_admin(people["bob"], administrator=True)
    assert not Access().is_admin(people["alice"])  # without the permission passed in
    assert str(ADMIN_ROLE_ID) in {str(r.id) for r in people["alice"].roles}


async def test_chat_channels_are_stored_as_one_value() -> None:
    stored: dict[str, str] = {"value": "7, 3,not-an-id"}

    async def read() -> str | None:
        return stored.get("value")

    async def write(value: str) -> None:
        stored["value"] = value

    channels = ChatChannels(read, write)
    await channels.load()
    assert 3 in channels and 7 in channels and len(channels) == 2
    await channels.set(5, True)
    await channels.set(7, False)
    assert stored["value"] == "3,5"
    again = ChatChannels(read, write)
    await again.load()
    assert 5 in again and 7 not in again


def test_autocomplete_choices() -> None:
    assert [c.value for c in choices(["demo", "rinna/x", "demo"], "")] == ["demo", "rinna/x"]
    assert [c.value for c in choices(["friendly", "concierge"], "CON")] == ["concierge"]
    assert len(choices([f"p{i}" for i in range(40)], "")) == MAX_CHOICES
