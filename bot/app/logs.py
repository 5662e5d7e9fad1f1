"""Logging set-up: one line per record on stderr, held back while the console writes a reply.

The interactive console shares the terminal with the log: there, only warnings and errors are
shown (never in the middle of a reply, see `held_logs`), and every record goes to a file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class HoldingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that can keep records back (while a reply is being written on the same
    terminal) and write them all once released. Records come from any thread."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[logging.LogRecord] | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        if self._held is not None:
            self._held.append(record)
        else:
            super().emit(record)

    def hold(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._held is None:
                self._held = []

    def let_through(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            held, self._held = self._held or [], None
            for record in held:
                super().emit(record)


def configure_logging(level: str, *, interactive_log_file: Path | None = None) -> None:
    """Log at `level` to stderr; with `interactive_log_file` (the interactive console), to that
    file instead, with only warnings and errors on stderr."""
    terminal = HoldingHandler()
    handlers: list[logging.Handler] = [terminal]
    unwritable: OSError | None = None
    if interactive_log_file is not None:
        try:
            interactive_log_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(logging.FileHandler(interactive_log_file, encoding="utf-8"))
            terminal.setLevel(logging.WARNING)
        except OSError as exc:  # the full log stays on the terminal, between replies
            unwritable = exc
    logging.basicConfig(level=level.upper(), format=FORMAT, datefmt=DATE_FORMAT, handlers=handlers)
    if unwritable is not None:
        logging.getLogger(__name__).warning("cannot write CONSOLE_LOG_FILE: %s", unwritable)
    # Libraries are chatty at INFO; their warnings still show.
    for name in ("httpx", "urllib3", "filelock", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    # transformers 5 deprecation noise raised from inside peft; nothing for a user to do.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )


@contextlib.contextmanager
def held_logs() -> Iterator[None]:
    """Keep log lines off the terminal while a reply is written to it; they follow the reply."""
    holding = [h for h in logging.getLogger().handlers if isinstance(h, HoldingHandler)]
    for handler in holding:
        handler.hold()
    try:
        yield
    finally:
        for handler in holding:
            handler.let_through()
