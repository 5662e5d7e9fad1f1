"""Per-conversation ordering: a conversation's turns are answered one at a time, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from bot.messages import ConversationKey


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class SharedLock(Protocol):
    """A lock per conversation shared with other bot processes (one database, several
    processes: bot/storage/shared_locks.py)."""

    def hold(self, key: ConversationKey) -> AbstractAsyncContextManager[None]: ...


class KeyedLocks:
    """An asyncio lock per conversation, dropped again when nobody holds or waits for it; with
    `shared`, the other processes' lock too, taken after this process's own."""

    def __init__(self, shared: SharedLock | None = None) -> None:
        self._locks: dict[ConversationKey, tuple[asyncio.Lock, int]] = {}
        self._shared = shared

    @asynccontextmanager
    async def hold(self, key: ConversationKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._shared is None:
                    yield
                else:
                    async with self._shared.hold(key):
                        yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class InFlight:
    """The generation running for each conversation, so `/stop` can cancel it."""

    def __init__(self) -> None:
        self._handles: dict[ConversationKey, Cancellable] = {}
        self._stopping = False

    def add(self, key: ConversationKey, handle: Cancellable) -> None:
        self._handles[key] = handle
        if self._stopping:  # submitted after cancel_all(): it must not outlive the shutdown
            handle.cancel()

    def discard(self, key: ConversationKey, handle: Cancellable) -> None:
        if self._handles.get(key) is handle:
            del self._handles[key]

    def cancel(self, key: ConversationKey) -> bool:
        handle = self._handles.get(key)
        if handle is None:
            return False
        handle.cancel()
        return True

    def cancel_channel(self, channel: ConversationKey) -> bool:
        """Cancel the generations in every thread of `channel`'s channel."""
        keys = [
            key
            for key in self._handles
            if (key.platform, key.workspace, key.channel)
            == (channel.platform, channel.workspace, channel.channel)
        ]
        return bool([key for key in keys if self.cancel(key)])

    def cancel_all(self) -> int:
        """Cancel every generation, and any submitted from now on (shutting down)."""
        self._stopping = True
        for handle in self._handles.values():
            handle.cancel()
        return len(self._handles)
