"""The port the adapters talk to. Adapters know this and `bot.messages`, nothing else."""

from __future__ import annotations

from typing import Protocol

from bot.messages import IncomingMessage, ReplySink


class MessageHandler(Protocol):
    async def handle(self, message: IncomingMessage, sink: ReplySink) -> None:
        """Answer `message` through `sink`; never raises."""
        ...
