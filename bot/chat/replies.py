"""The replies in progress, so that shutting down can take no new messages and wait for the
ones being answered (see bot/app/lifecycle.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

SHUTTING_DOWN_REPLY = "ただいまボットを停止しています。しばらくしてからもう一度話しかけてください。"
SHUTDOWN_NOTE = "（ボットを停止するため途中で止めました）"


class Replies:
    """The messages being answered right now; once `closing`, no new one starts."""

    def __init__(self) -> None:
        self.closing = False
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self._count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._count -= 1
            if not self._count:
                self._idle.set()

    async def wait_idle(self, timeout_s: float, hurry: asyncio.Event | None = None) -> bool:
        """Wait until no reply is in progress, for at most `timeout_s` or until `hurry` is set.
        True when none is left."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not self._count
