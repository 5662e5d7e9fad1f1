"""Stopping gracefully: what SIGTERM (systemd, Docker, Kubernetes) and Ctrl-C do.

On the first signal the bot takes no new messages and gives the replies in progress up to
SHUTDOWN_GRACE_SECONDS to finish; the rest are stopped (they end with a note, as /stop does).
Then platform connections and the database are closed. A second signal ends the grace at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

log = logging.getLogger(__name__)

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


class StopSignals:
    """SIGTERM and SIGINT while the bot serves: the first sets `stop`, a second `hurry`."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self.received = ""  # the first signal's name

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not on Windows' default loop; there Ctrl-C stays a KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._received, sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)

    def _received(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self.stop.is_set():
            if not self.hurry.is_set():
                log.warning("%s again: stopping the replies in progress now", name)
            self.hurry.set()
            return
        self.received = name
        self.stop.set()
