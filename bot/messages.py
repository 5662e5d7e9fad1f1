"""The plain values that cross the boundary between chat platforms and the bot."""

from __future__ import annotations

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


@dataclass(frozen=True)
class IncomingMessage:
    """A message a person sent, already stripped of platform details (mentions, markup)."""

    key: ConversationKey
    author_id: str
    author_name: str
    text: str
    is_admin: bool = False
    rate_limited: bool = True  # False for the console's own user, who owns the machine
    sent_at: datetime = field(default_factory=lambda: datetime.now(UTC))


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
