"""Which Slack events the bot answers, and where. Pure: raw event dicts in, plain values out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.slack.text import to_plain_text
from bot.messages import ConversationKey, IncomingMessage

PLATFORM = "slack"
# Message subtypes written by a person. Everything else (edits, deletions, joins, bot
# messages, ...) is not something to answer.
PERSON_SUBTYPES = frozenset({None, "thread_broadcast", "file_share"})


@dataclass(frozen=True)
class SlackMessage:
    """A Slack message the bot may answer, before author names and admin rights are known."""

    key: ConversationKey
    channel: str
    ts: str  # the message's own timestamp: with `channel`, its identity in Slack
    reply_thread_ts: str | None  # where the reply goes; None answers in the DM itself
    user_id: str
    text: str  # still in Slack markup
    needs_joined_thread: bool = False  # a plain thread reply: answer only in threads we joined
    in_dm: bool = False

    @property
    def identity(self) -> str:
        """Same for every delivery of this message: retries, and app_mention plus message."""
        return f"message:{self.channel}:{self.ts}"

    @property
    def sent_at(self) -> datetime:
        try:
            return datetime.fromtimestamp(float(self.ts), UTC)
        except ValueError:
            return datetime.now(UTC)


def read_event(
    event: dict, *, team_id: str, bot_user_id: str, mention: bool
) -> SlackMessage | None:
    """Decide whether an `app_mention` (`mention=True`) or `message` event is for the bot.

    - A mention in a channel is answered in a thread: the thread it was written in, or a new
      one under the mention itself. Each thread is its own conversation.
    - A DM is answered where it was written (the DM, or a thread inside it).
    - A plain channel message is answered only inside a thread the bot has joined.
    - Bots (this one included), edits and other system messages are never answered.
    """
    user = event.get("user")
    channel = event.get("channel")
    ts = event.get("ts")
    if not user or not channel or not ts or user == bot_user_id:
        return None
    if event.get("bot_id") or event.get("subtype") not in PERSON_SUBTYPES:
        return None
    text = event.get("text") or ""
    thread_ts = event.get("thread_ts")
    if is_direct_message(event):
        return SlackMessage(
            ConversationKey(PLATFORM, team_id, channel, thread_ts or ""),
            channel,
            ts,
            thread_ts,
            user,
            text,
            in_dm=True,
        )
    if mention:
        root = thread_ts or ts
        return SlackMessage(
            ConversationKey(PLATFORM, team_id, channel, root), channel, ts, root, user, text
        )
    if f"<@{bot_user_id}" in text:
        return None  # the app_mention event for the same message answers it
    if not thread_ts or thread_ts == ts:
        return None  # the channel's own timeline: only mentions are for the bot
    return SlackMessage(
        ConversationKey(PLATFORM, team_id, channel, thread_ts),
        channel,
        ts,
        thread_ts,
        user,
        text,
        needs_joined_thread=True,
    )


def to_incoming(
    message: SlackMessage,
    *,
    bot_user_id: str,
    author_name: str,
    names: Mapping[str, str],
    is_admin: bool,
) -> IncomingMessage:
    """The message as the conversation manager sees it: plain text, the bot's mention gone."""
    return IncomingMessage(
        key=message.key,
        author_id=message.user_id,
        author_name=author_name,
        text=to_plain_text(message.text, bot_user_id=bot_user_id, names=names),
        is_admin=is_admin,
        is_dm=message.in_dm,
        sent_at=message.sent_at,
    )


def is_direct_message(event: dict) -> bool:
    # app_mention events carry no channel_type; DM channel ids start with "D".
    channel_type = event.get("channel_type")
    if channel_type:
        return channel_type == "im"
    return str(event.get("channel", "")).startswith("D")


class RecentKeys:
    """Remembers the newest `size` keys, so memory stays bounded however long the bot runs."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def first_time(self, key: str) -> bool:
        """True the first time `key` is seen (and remembers it); False while it is remembered."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True
