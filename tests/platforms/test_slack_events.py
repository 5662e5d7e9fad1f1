"""Raw Slack event payloads (as the Events API delivers them) to the messages the bot answers,
and on to the IncomingMessage the conversation manager sees."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.slack.events import RecentKeys, SlackMessage, read_event, to_incoming
from bot.messages import ConversationKey, IncomingMessage

TEAM, BOT = "T0TEAM", "UBOT"


def key(channel: str, thread: str = "") -> ConversationKey:
    return ConversationKey("slack", TEAM, channel, thread)


MENTION = {
    "type": "app_mention",
    "user": "U0ALICE",
    "text": "<@UBOT> 今日の天気は？",
    "ts": "1700000100.000100",
    "channel": "C0CHAN",
    "event_ts": "1700000100.000100",
}
CHANNEL_MESSAGE = {
    "type": "message",
    "user": "U0ALICE",
    "text": "続きです",
    "ts": "1700000200.000200",
    "channel": "C0CHAN",
    "channel_type": "channel",
    "event_ts": "1700000200.000200",
}
DM = {**CHANNEL_MESSAGE, "channel": "D0DM", "channel_type": "im", "text": "DMです"}


@pytest.mark.parametrize(
    ("event", "mention", "expected"),
    [
        pytest.param(
            MENTION,
            True,
            (key("C0CHAN", "1700000100.000100"), "1700000100.000100", False),
            id="mention-starts-a-thread-under-itself",
        ),
        pytest.param(
            {**MENTION, "thread_ts": "1700000000.000001"},
            True,
            (key("C0CHAN", "1700000000.000001"), "1700000000.000001", False),
            id="mention-inside-a-thread-joins-that-thread",
        ),
        pytest.param(
            {**CHANNEL_MESSAGE, "thread_ts": "1700000100.000100"},
            False,
            (key("C0CHAN", "1700000100.000100"), "1700000100.000100", True),
            id="thread-reply-if-the-thread-was-joined",
        ),
        pytest.param(
            {**CHANNEL_MESSAGE, "channel_type": "group", "thread_ts": "1.0"},
            False,
            (key("C0CHAN", "1.0"), "1.0", True),
            id="private-channel-thread-reply",
        ),
        pytest.param(
            {**CHANNEL_MESSAGE, "subtype": "thread_broadcast", "thread_ts": "1.0"},
            False,
            (key("C0CHAN", "1.0"), "1.0", True),
            id="reply-also-sent-to-channel",
        ),
        pytest.param(DM, False, (key("D0DM"), None, False), id="dm-answered-in-the-dm"),
        pytest.param(
            {**DM, "thread_ts": "1.0"}, False, (key("D0DM", "1.0"), "1.0", False), id="dm-thread"
        ),
        pytest.param(
            {**DM, "subtype": "file_share", "files": [{"id": "F1"}]},
            False,
            (key("D0DM"), None, False),
            id="dm-with-a-file",
        ),
        pytest.param(
            {**DM, "text": "<@UBOT> DMでのメンション"},
            False,
            (key("D0DM"), None, False),
            id="dm-mentioning-the-bot",
        ),
    ],
)
def test_events_the_bot_answers(event, mention, expected):
    message = read_event(event, team_id=TEAM, bot_user_id=BOT, mention=mention)
    assert message is not None
    assert (message.key, message.reply_thread_ts, message.needs_joined_thread) == expected
    assert message.user_id == "U0ALICE" and message.text == event["text"]
    assert message.identity == f"message:{event['channel']}:{event['ts']}"


@pytest.mark.parametrize(
    ("event", "mention"),
    [
        pytest.param(CHANNEL_MESSAGE, False, id="channel-timeline-without-mention"),
        pytest.param(
            {**CHANNEL_MESSAGE, "thread_ts": CHANNEL_MESSAGE["ts"]}, False, id="thread-root-itself"
        ),
        pytest.param(
            {**CHANNEL_MESSAGE, "text": "<@UBOT> よろしく", "thread_ts": "1.0"},
            False,
            id="mention-as-message-left-to-app-mention",
        ),
        pytest.param({**DM, "bot_id": "B0OTHER"}, False, id="another-bot"),
        pytest.param({**DM, "subtype": "bot_message", "user": None}, False, id="bot-message"),
        pytest.param({**DM, "user": BOT}, False, id="own-message"),
        pytest.param({**MENTION, "user": BOT}, True, id="own-mention"),
        pytest.param({**MENTION, "bot_id": "B0OTHER"}, True, id="bot-mentioning-us"),
        pytest.param(
            {
                "type": "message",
                "subtype": "message_changed",
                "channel": "D0DM",
                "channel_type": "im",
                "ts": "2.0",
                "message": {"user": "U0ALICE", "text": "編集後", "ts": "1.0"},
            },
            False,
            id="edit",
        ),
        pytest.param(
            {**DM, "subtype": "message_deleted", "deleted_ts": "1.0"}, False, id="deletion"
        ),
        pytest.param({**DM, "subtype": "channel_join"}, False, id="join"),
        pytest.param({k: v for k, v in DM.items() if k != "ts"}, False, id="no-ts"),
    ],
)
def test_events_the_bot_ignores(event, mention):
    assert read_event(event, team_id=TEAM, bot_user_id=BOT, mention=mention) is None


@pytest.mark.parametrize(
    ("event", "mention", "is_admin", "expected_text", "is_dm"),
    [
        (MENTION, True, False, "今日の天気は？", False),
        (
            {**MENTION, "text": "<@UBOT> <@U0BOB> &amp; 私の分も"},
            True,
            True,
            "@ボブ & 私の分も",
            False,
        ),
        ({**DM, "text": "<@UBOT|bot>  /reset "}, False, False, "/reset", True),
    ],
)
def test_a_raw_event_becomes_an_incoming_message(event, mention, is_admin, expected_text, is_dm):
    message = read_event(event, team_id=TEAM, bot_user_id=BOT, mention=mention)
    assert message is not None
    incoming = to_incoming(
        message, bot_user_id=BOT, author_name="アリス", names={"U0BOB": "ボブ"}, is_admin=is_admin
    )
    assert incoming == IncomingMessage(
        key=message.key,
        author_id="U0ALICE",
        author_name="アリス",
        text=expected_text,
        is_admin=is_admin,
        is_dm=is_dm,
        sent_at=datetime.fromtimestamp(float(event["ts"]), UTC),
    )


def test_app_mention_without_channel_type_in_a_dm_channel_counts_as_dm():
    message = read_event(
        {**MENTION, "channel": "D0DM"}, team_id=TEAM, bot_user_id=BOT, mention=True
    )
    assert message is not None and message.in_dm and message.reply_thread_ts is None


def test_sent_at_comes_from_the_slack_timestamp():
    message = read_event(MENTION, team_id=TEAM, bot_user_id=BOT, mention=True)
    assert isinstance(message, SlackMessage)
    assert message.sent_at == datetime.fromtimestamp(1700000100.0001, UTC)


def test_recent_keys_remember_a_bounded_number():
    recent = RecentKeys(size=3)
    assert [recent.first_time(k) for k in ("a", "b", "a", "c", "d")] == [
        True,
        True,
        False,
        True,
        True,
    ]
    # "a" was seen again after "b", so "b" was the oldest when "d" came, and was forgotten.
    assert recent.first_time("b") is True
    assert [recent.first_time(k) for k in ("c", "d", "b")] == [False, False, False]
