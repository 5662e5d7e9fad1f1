"""Discord messages to `IncomingMessage`: which messages to answer, their conversation key and
their text with Discord's markup turned into words."""

from __future__ import annotations

import re
from collections.abc import Container, Mapping

import discord

from bot.messages import ConversationKey, IncomingMessage

PLATFORM = "discord"
DM_WORKSPACE = "dm"
UNKNOWN_USER = "不明なユーザー"
UNKNOWN_ROLE = "不明なロール"
UNKNOWN_CHANNEL = "不明なチャンネル"

_MARKUP = re.compile(r"<(@!?|@&|#)(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_DROPPED = "\ue000"  # marks a removed bot mention until the spaces around it are tidied
_AROUND_DROPPED = re.compile(rf"[ \t\u3000]*{_DROPPED}[ \t\u3000]*")
# Everything a person types; system messages (pins, joins, thread starts) are not chat.
_CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def conversation_key(guild_id: int | None, channel: object) -> ConversationKey:
    """Channels and DMs are conversations of their own; so is each thread, kept under its parent
    channel (`thread` = the thread's id) so it shares the parent's persona, sampling settings
    and chat-channel flag while keeping its own history."""
    if guild_id is None:
        return ConversationKey(PLATFORM, DM_WORKSPACE, str(_id(channel)))
    if isinstance(channel, discord.Thread) and channel.parent_id is not None:
        return ConversationKey(PLATFORM, str(guild_id), str(channel.parent_id), str(channel.id))
    return ConversationKey(PLATFORM, str(guild_id), str(_id(channel)))


def channel_ids(channel: object) -> tuple[int, ...]:
    """The ids a channel answers to in allow-lists and the chat-channel list: its own and, for a
    thread, its parent's."""
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    return (_id(channel),) if parent is None else (_id(channel), parent)


def _id(channel: object) -> int:
    return int(getattr(channel, "id"))  # noqa: B009 - every channel kind has an id


def reason_to_answer(
    message: discord.Message,
    *,
    me_id: int,
    my_role_id: int | None,
    chat_channels: Container[int],
    allow_dms: bool,
) -> str | None:
    """Why the bot should answer `message` ("dm", "mention", "reply", "chat channel"), or None.

    Bots (this one included) and webhooks are never answered. A message without content is
    skipped too: without the message-content intent Discord leaves it empty unless the bot
    is mentioned or it is a DM, and an image alone gives the model nothing to answer.
    """
    if message.author.bot or message.author.id == me_id or message.webhook_id is not None:
        return None
    if message.type not in _CHAT_TYPES or not message.content:
        return None
    if message.guild is None:
        return "dm" if allow_dms else None
    if any(user.id == me_id for user in message.mentions):
        return "mention"
    if my_role_id is not None and my_role_id in message.raw_role_mentions:
        return "mention"  # people sometimes pick the bot's own role in the @ menu
    if _replies_to(message, me_id):
        return "reply"
    if any(channel_id in chat_channels for channel_id in channel_ids(message.channel)):
        return "chat channel"
    return None


def _replies_to(message: discord.Message, me_id: int) -> bool:
    reference = message.reference
    if reference is None:
        return False
    replied = reference.resolved or reference.cached_message
    return isinstance(replied, discord.Message) and replied.author.id == me_id


def to_incoming(
    message: discord.Message,
    *,
    me_id: int,
    my_role_id: int | None,
    is_admin: bool,
    channel: object | None = None,
) -> IncomingMessage:
    """`channel` overrides `message.channel` when the adapter had to fetch it (a thread that was
    not in the cache arrives as a PartialMessageable)."""
    guild = message.guild
    text = clean_text(
        message.content,
        drop_users={me_id},
        drop_roles={my_role_id} if my_role_id is not None else set(),
        users={user.id: user.display_name for user in message.mentions},
        roles={role.id: role.name for role in message.role_mentions},
        channels=_channel_names(message, guild),
    )
    return IncomingMessage(
        key=conversation_key(guild.id if guild else None, channel or message.channel),
        author_id=str(message.author.id),
        author_name=message.author.display_name,
        text=text,
        is_admin=is_admin,
        is_dm=guild is None,
        sent_at=message.created_at,
    )


def _channel_names(message: discord.Message, guild: discord.Guild | None) -> dict[int, str]:
    if guild is None:
        return {}
    names = {}
    for channel_id in message.raw_channel_mentions:
        channel = guild.get_channel_or_thread(channel_id)
        if channel is not None:
            names[channel_id] = channel.name
    return names


def clean_text(
    content: str,
    *,
    drop_users: Container[int],
    drop_roles: Container[int],
    users: Mapping[int, str],
    roles: Mapping[int, str],
    channels: Mapping[int, str],
) -> str:
    """Remove mentions of the bot; turn other user and role mentions into their names, channel
    mentions into #name and custom emoji into :name:. Pure, so it is tested from strings."""

    def replace(match: re.Match[str]) -> str:
        kind, target = match.group(1), int(match.group(2))
        if kind == "#":
            return "#" + channels.get(target, UNKNOWN_CHANNEL)
        if kind == "@&":
            return _DROPPED if target in drop_roles else roles.get(target, UNKNOWN_ROLE)
        return _DROPPED if target in drop_users else users.get(target, UNKNOWN_USER)

    text = _MARKUP.sub(replace, content)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    return _AROUND_DROPPED.sub(_close_gap, text).strip()


def _close_gap(match: re.Match[str]) -> str:
    """A removed mention between words leaves one space; at a line's edge, nothing."""
    text, start, end = match.string, match.start(), match.end()
    at_edge = start == 0 or end == len(text) or text[start - 1] == "\n" or text[end] == "\n"
    return "" if at_edge else " "
