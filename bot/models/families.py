"""Model families the bot runs with code of its own, where transformers has none (it dropped
GPTSAN in version 5). A family registers by the `model_type` its config.json names; the
transformers engine's loader asks here before it falls back to `AutoModelForCausalLM`, so it
needs no branch per family.

To add one: a package under `bot/models/` with a module that defines `FAMILY`, and its module
name in `_MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.models.catalogue import ModelEntry
from bot.models.files import read_json
from bot.models.prompt_formats import PromptFormat
from bot.models.tokenizers import Tokenizer

_MODULES = ("bot.models.gptsan.family",)  # each defines FAMILY; imported when first asked


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    architecture: str  # the class in config.json's `architectures` (and the catalogue's family)
    load: Callable[[Path, Any, str], Any]  # (folder, torch dtype, device) -> the model, in eval
    load_tokenizer: Callable[[Path], Tokenizer]
    prompt_format: PromptFormat
    quantization_refused: str = ""  # why 8-bit/4-bit cannot be used, when it cannot
    supports_lora: bool = True

    def matches(self, config: dict[str, Any]) -> bool:
        return config.get("model_type") == self.model_type or self.architecture in (
            config.get("architectures") or []
        )


def _families() -> list[Family]:
    return [importlib.import_module(module).FAMILY for module in _MODULES]


def family_of_entry(entry: ModelEntry | None) -> Family | None:
    """The family of a catalogue model, known before anything is downloaded."""
    if entry is None:
        return None
    return next((f for f in _families() if f.architecture == entry.family), None)


def family_of_folder(folder: Path) -> Family | None:
    """The family a folder's config.json names (an unreadable config is left to the general
    loader to report)."""
    config = read_json(folder / "config.json")
    return next((f for f in _families() if f.matches(config)), None) if config else None
