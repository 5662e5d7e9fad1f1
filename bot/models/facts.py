"""What the bot needs to know about a model apart from its weights: prompt format (and why),
context length and sampling defaults.

Engines that serve weights elsewhere (a GGUF file, a server) decide these as the transformers
loader does (`bot.models.identity.detect` on the model's folder), or from what `python -m bot
convert` recorded when it ran `detect` on the original folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.models.catalogue import find_entry
from bot.models.files import read_json, read_metadata
from bot.models.identity import detect
from bot.models.prompt_formats import FORMATS, PLAIN, PLAIN_NL, PromptFormat
from bot.models.sampling import FORMAT_DEFAULTS, SamplingParams
from bot.models.tokenizers import Tokenizer


@dataclass(frozen=True)
class ModelFacts:
    prompt_format: PromptFormat
    context_length: int | None  # None: the engine's own number (GGUF header, server)
    sampling_defaults: SamplingParams
    reason: str  # why this format, in Japanese, for /status
    is_demo: bool = False
    entry_id: str = ""  # the catalogue model it was identified as, if any


DEFAULT_CONTEXT = 2048  # when neither the card nor the weights say


def context_length(*known: int | None) -> int:
    """The context a model is served with: the smallest of what is known (the card's number,
    the positions the weights have, what a server or GGUF header says), else 2048. A card may
    promise more than the weights can take, never the other way round."""
    numbers = [int(n) for n in known if n]
    return min(numbers) if numbers else DEFAULT_CONTEXT


def folder_facts(spec: str, folder: Path, tokenizer: Tokenizer, setting: str) -> ModelFacts:
    """A model folder, as the transformers loader would see it."""
    meta = read_metadata(folder)
    detected = detect(
        spec, folder, setting=setting, has_nl_piece=tokenizer.has_piece("<NL>"), metadata=meta
    )
    return ModelFacts(
        detected.prompt_format,
        detected.context_length or _config_context(folder),
        detected.sampling,
        detected.reason(japanese=True),
        bool(meta.get("demo")),
        detected.entry.hub_id if detected.entry else "",
    )


def recorded_facts(recorded: dict[str, Any], tokenizer: Tokenizer, setting: str) -> ModelFacts:
    """What `python -m bot convert` recorded about the original folder (see `as_record`)."""
    has_nl = tokenizer.has_piece("<NL>")
    name = setting if setting != "auto" else str(recorded.get("prompt_format") or "plain")
    fmt = PLAIN_NL if name == "plain" and has_nl else FORMATS.get(name, PLAIN)
    entry = find_entry(str(recorded.get("entry") or ""))
    same = setting == "auto" or (entry is not None and entry.prompt_format == name)
    sampling = entry.sampling if entry is not None and same else FORMAT_DEFAULTS[fmt.name]
    reason = str(recorded.get("reason") or "") if setting == "auto" else "PROMPT_FORMAT の設定"
    return ModelFacts(
        fmt,
        recorded.get("context_length"),
        sampling,
        f"{reason}（変換時の判定）" if setting == "auto" else reason,
        bool(recorded.get("demo")),
        entry.hub_id if entry else "",
    )


def bare_facts(tokenizer: Tokenizer, setting: str) -> ModelFacts:
    """No folder at all (a server's model with no local files): PROMPT_FORMAT or plain."""
    has_nl = tokenizer.has_piece("<NL>")
    name = setting if setting != "auto" else "plain"
    fmt = PLAIN_NL if name == "plain" and has_nl else FORMATS[name]
    reason = "PROMPT_FORMAT の設定" if setting != "auto" else "モデルのファイルがないため plain"
    return ModelFacts(fmt, None, FORMAT_DEFAULTS[fmt.name], reason)


def as_record(facts: ModelFacts, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "prompt_format": facts.prompt_format.name,
        "context_length": facts.context_length,
        "reason": facts.reason,
        "entry": facts.entry_id,
        "demo": facts.is_demo,
    }


def _config_context(folder: Path) -> int | None:
    config = read_json(folder / "config.json")
    value = config.get("max_position_embeddings") or config.get("n_positions")
    return int(value) if value else None
