"""Memory in use, in a few words for /status."""

from __future__ import annotations

import os

from bot.engines.contract import LoadedModel


def process_memory() -> str:
    """This process's resident memory (a llama.cpp model lives in it; a server's does not)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError):
        return "不明"
    return f"RAM {pages * os.sysconf('SC_PAGE_SIZE') / 2**30:.2f} GiB"


def device_memory(model: LoadedModel | None) -> str:
    """The GPU memory torch holds for a model on CUDA, else this process's resident memory."""
    import torch

    if model is not None and model.device == "cuda" and torch.cuda.is_available():
        return f"GPU {torch.cuda.memory_allocated() / 2**30:.2f} GiB"
    return process_memory()
