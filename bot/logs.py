"""Logging set-up: one line per record on stderr."""

from __future__ import annotations

import logging
import os
import warnings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # Libraries are chatty at INFO; their warnings still show.
    for name in ("httpx", "urllib3", "filelock", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")
    # transformers 5 deprecation noise raised from inside peft; nothing for a user to do.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )
