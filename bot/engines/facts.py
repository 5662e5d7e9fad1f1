"""What the bot needs to know about a model apart from its weights: prompt format, context
length and sampling defaults, from the catalogue entry, the folder's files and the tokenizer.

The transformers loader decides these the same way; engines that serve weights elsewhere (a
GGUF file, a server) use this with the model's original folder or its tokenizer files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.demo_model import METADATA_FILE
from bot.prompt_format import FORMATS, PromptFormat, detect_format
from bot.registry import find_entry
from bot.sampling import FORMAT_DEFAULTS, SamplingParams
from bot.tokenizer import Tokenizer


@dataclass(frozen=True)
class ModelFacts:
    prompt_format: PromptFormat
    context_length: int
    sampling_defaults: SamplingParams
    is_demo: bool = False


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def model_facts(
    name: str,
    folder: Path | None,
    tokenizer: Tokenizer,
    prompt_format: str = "auto",
    context_length: int | None = None,
) -> ModelFacts:
    """`name` is what the user called the model (a catalogue name, hub id or path); `folder`
    holds its config and tokenizer files, if there is one."""
    meta = read_json(folder / METADATA_FILE) if folder else {}
    config = read_json(folder / "config.json") if folder else {}
    entry = find_entry(name) or find_entry(str(meta.get("source", "")))
    format_name = prompt_format
    if format_name == "auto":
        format_name = meta.get("prompt_format") or (entry.prompt_format if entry else "auto")
    has_nl = tokenizer.has_piece("<NL>")
    if format_name == "auto":
        chosen = detect_format(entry.hub_id if entry else str(meta.get("source") or name), has_nl)
    elif format_name == "plain" and has_nl:
        chosen = detect_format("", has_nl)
    else:
        chosen = FORMATS[format_name]
    context = context_length or meta.get("context_length")
    context = context or (entry.context_length if entry else None)
    context = context or config.get("max_position_embeddings") or config.get("n_positions")
    return ModelFacts(
        prompt_format=chosen,
        context_length=int(context or 2048),
        sampling_defaults=entry.sampling if entry else FORMAT_DEFAULTS[chosen.name],
        is_demo=bool(meta.get("demo")),
    )
