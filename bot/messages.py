"""The plain values that cross the boundary between chat platforms and the bot, and the port
the platforms talk to (`MessageHandler`). Adapters know this module and the command table,
nothing else of the bot; storage keys conversations by `ConversationKey`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class ConversationKey:
    """Where a conversation lives. `thread` is "" for a channel's main timeline."""

    platform: str
    workspace: str
    channel: str
    thread: str = ""

    def __str__(self) -> str:
        tail = f"/{self.thread}" if self.thread else ""
        return f"{self.platform}:{self.workspace}/{self.channel}{tail}"


_SURROGATE = re.compile("[\ud800-\udfff]")


def repair_text(text: str) -> str:
    """Valid Unicode from whatever a platform or terminal gave: a surrogate pair written as two
    code points becomes its character, and each lone surrogate (a broken JSON escape, or a byte
    that was not UTF-8 kept by Python's `surrogateescape`) becomes U+FFFD. Tokenizers raise on
    lone surrogates, and UTF-8 cannot store them."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


@dataclass(frozen=True)
class IncomingMessage:
    """A message a person sent, already stripped of platform details (mentions, markup).

    Text and author name are repaired on construction (`repair_text`), so no platform can hand
    the bot text that is not valid Unicode."""

    key: ConversationKey
    author_id: str
    author_name: str
    text: str
    is_admin: bool = False
    # A one-to-one conversation with the bot (Discord DM, Slack IM): nobody else's context is
    # in it, so what is admin-only in shared channels (/reset) is open there.
    is_dm: bool = False
    rate_limited: bool = True  # False for the console's own user, who owns the machine
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", repair_text(self.text))
        object.__setattr__(self, "author_name", repair_text(self.author_name))


class ReplySink(Protocol):
    """How a platform shows one reply. The manager calls `update` zero or more times with the
    whole text so far (platforms that cannot edit messages may ignore it), then `finish` once."""

    async def update(self, text: str) -> None: ...

    async def finish(self, text: str) -> None: ...


class NullSink:
    """A sink that keeps only the final text; handy for callers that do not stream."""

    def __init__(self) -> None:
        self.text: str | None = None

    async def update(self, text: str) -> None:
        return None

    async def finish(self, text: str) -> None:
        self.text = text


class MessageHandler(Protocol):
    """What a platform hands each message to (the conversation manager)."""

    async def handle(self, message: IncomingMessage, sink: ReplySink) -> None:
        """Answer `message` through `sink`; never raises."""
        ...
