"""The channels an admin marked as chat channels, where the bot answers every message.

Kept in the bot's key-value state (one value: channel ids joined by commas) so the adapter
needs no schema change; the set lives in memory and every change is written through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

STATE_KEY = "discord.chat_channels"


class ChatChannels:
    def __init__(
        self,
        read: Callable[[], Awaitable[str | None]],
        write: Callable[[str], Awaitable[None]],
    ) -> None:
        """`read`/`write` get and put the stored value (see `serve`, which uses the
        repository's get_state/set_state on the database thread)."""
        self._read = read
        self._write = write
        self._ids: set[int] = set()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        value = await self._read() or ""
        self._ids = {int(part) for part in value.split(",") if part.strip().isdigit()}

    def __contains__(self, channel_id: object) -> bool:
        return channel_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    async def set(self, channel_id: int, enabled: bool) -> None:
        async with self._lock:  # two admins at once must not lose each other's change
            ids = self._ids | {channel_id} if enabled else self._ids - {channel_id}
            await self._write(",".join(str(i) for i in sorted(ids)))
            self._ids = ids
