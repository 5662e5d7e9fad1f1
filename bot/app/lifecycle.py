"""Stopping gracefully: what SIGTERM (systemd, Docker, Kubernetes) and Ctrl-C do. The replies
in progress are tracked by `bot.chat.replies`.

On the first signal the bot takes no new messages and gives the replies in progress up to
SHUTDOWN_GRACE_SECONDS to finish; the rest are stopped (they end with a note, as /stop does).
Then platform connections and the database are closed. A second signal ends the grace at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

log = logging.getLogger(__name__)


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
