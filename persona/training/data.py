"""Dialogue pairs read, rendered in the bot's own prompt formats, tokenised within the cutoff,
split into training and held-out sets, and padded into batches."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.models.prompt_formats import PERSONA_FORMATS, Turn, neutralise
from bot.models.tokenizers import Tokenizer
from persona.training.config import TEMPLATES, TrainingError

IGNORE = -100


@dataclass
class Example:
    context: list[Turn]
    reply: str


@dataclass
class EncodedExample:
    ids: list[int]
    boundary: int  # tokens before this index are prompt: no loss on them


@dataclass
class DataStats:
    records: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    context_turns_dropped: int = 0  # oldest turns left out to fit the cutoff
    replies_truncated: int = 0


def load_pairs(path: Path, stats: DataStats) -> list[Example]:
    """Read JSON lines of either accepted shape; malformed lines are counted, not fatal."""
    examples: list[Example] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc
    for line in lines:
        if not line.strip():
            continue
        stats.records += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            stats.skipped["not JSON"] += 1
            continue
        example = _example(record) if isinstance(record, dict) else None
        if example is None:
            stats.skipped["no context/reply or input/output"] += 1
        elif not example.reply.strip() or not example.context:
            stats.skipped["empty reply or context"] += 1
        else:
            examples.append(example)
    return examples


def _example(record: dict[str, Any]) -> Example | None:
    if "reply" in record and "context" in record:
        reply = record["reply"]
        if isinstance(reply, str):
            reply = {"speaker": "", "text": reply}
        if not isinstance(reply, dict) or not isinstance(record["context"], list):
            return None
        speaker = str(reply.get("speaker", ""))
        turns = []
        for item in record["context"]:
            if isinstance(item, str):
                item = {"speaker": "", "text": item}
            if not isinstance(item, dict) or not str(item.get("text", "")).strip():
                continue
            who = str(item.get("speaker", ""))
            role = "assistant" if speaker and who == speaker else "user"
            turns.append(Turn(role, str(item["text"]), author_name=who))
        return Example(turns, str(reply.get("text", "")))
    if "input" in record and "output" in record:
        text = str(record["input"])
        return Example([Turn("user", text)] if text.strip() else [], str(record["output"]))
    return None


def render_prompt(
    template: str,
    context: Sequence[Turn],
    preamble: str = "",
    special_tokens: Collection[str] = (),
) -> str:
    """The prompt text for `context`, ending where the reply begins. rinna and line are the
    bot's own formats; instruct puts the exchange in `{input}` of the public recipe's template:
    the user's text alone for a single user turn, else the labelled transcript.
    `special_tokens`: the tokenizer's declared tokens, defused as when serving."""
    if template in TEMPLATES:  # the serving formats themselves, so training matches serving
        return PERSONA_FORMATS[template].render(context, preamble, special_tokens)
    raise TrainingError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


def render_reply(template: str, text: str, special_tokens: Collection[str] = ()) -> str:
    newline = "\n" if template == "line" else "<NL>"
    return neutralise(text, special_tokens).strip().replace("\n", newline)


def encode_example(
    tokenizer: Tokenizer,
    template: str,
    example: Example,
    cutoff: int,
    stats: DataStats,
    preamble: str = "",
) -> EncodedExample | None:
    """Token ids of prompt + reply + end-of-text, within `cutoff`.

    Oldest context turns are dropped until it fits; a reply too long even then is cut short.
    The prompt and the whole text are encoded separately and the loss starts where their ids
    part, so the prompt tokens are the ones the bot will send when serving."""
    reply = render_reply(template, example.reply, tokenizer.special_tokens)
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if not example.context:
        stats.skipped["empty reply or context"] += 1
        return None
    for keep in range(len(example.context), 0, -1):
        prompt = render_prompt(
            template, example.context[-keep:], preamble, tokenizer.special_tokens
        )
        prompt_ids = tokenizer.encode(prompt)
        ids = tokenizer.encode(prompt + reply) + eos
        boundary = _common_prefix(prompt_ids, ids)
        if len(ids) <= cutoff:
            stats.context_turns_dropped += len(example.context) - keep
            return EncodedExample(ids, boundary)
    stats.context_turns_dropped += len(example.context) - 1
    if boundary > cutoff // 2:
        stats.skipped["prompt too long for the cutoff"] += 1
        return None
    stats.replies_truncated += 1
    return EncodedExample(ids[:cutoff], boundary)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_examples(
    items: list[EncodedExample], fraction: float, seed: int, max_eval: int
) -> tuple[list[EncodedExample], list[EncodedExample]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if fraction > 0 and len(items) >= 2:
        n_eval = min(max(1, round(len(items) * fraction)), max_eval, len(items) - 1)
    held = [items[i] for i in order[:n_eval]]
    train = [items[i] for i in order[n_eval:]]
    return train, held


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding)."""
    import torch

    width = max(len(e.ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.ids)
        input_ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        labels[row, example.boundary : n] = torch.tensor(example.ids[example.boundary :])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
