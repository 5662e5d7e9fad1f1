"""Tokenizers, loaded so that they encode exactly as the model was trained.

transformers 5 builds a tokenizers-backed `T5Tokenizer` for rinna/LINE-style sentencepiece
models that adds a leading `▁`, collapses spaces, drops `\\n`, has no byte fallback and appends
`</s>` (see README "Tokenizers"). So a model folder with a sentencepiece `.model` file is encoded
by `sentencepiece` itself; other models (BPE `tokenizer.json`) go through `AutoTokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.model")


class Tokenizer(Protocol):
    """What the bot needs of a tokenizer. Encoding never adds special tokens."""

    eos_id: int | None
    pad_id: int | None
    bos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def has_piece(self, piece: str) -> bool: ...


class SentencePieceTokenizer:
    def __init__(self, model_file: Path, special_ids: dict[str, int | None] | None = None) -> None:
        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        special = special_ids or {}

        def pick(name: str, own: int) -> int | None:
            value = special.get(name)
            if value is not None:
                return value
            return own if own >= 0 else None

        self.eos_id = pick("eos", self.sp.eos_id())
        self.bos_id = pick("bos", self.sp.bos_id())
        self.pad_id = pick("pad", self.sp.pad_id())

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        # Models often have more embedding rows than the tokenizer has pieces (padded vocab);
        # an id past the tokenizer's end has no text.
        size = self.sp.vocab_size()
        return self.sp.decode([i for i in ids if 0 <= i < size])

    def has_piece(self, piece: str) -> bool:
        piece_id = self.sp.piece_to_id(piece)
        return piece_id != self.sp.unk_id() and self.sp.id_to_piece(piece_id) == piece


class HFTokenizer:
    """A `tokenizer.json` (BPE) tokenizer through transformers, for models such as open-calm."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self.hf = AutoTokenizer.from_pretrained(str(folder))
        self.eos_id = self.hf.eos_token_id
        self.bos_id = self.hf.bos_token_id
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def has_piece(self, piece: str) -> bool:
        return piece in self.hf.get_vocab()


def _special_ids_from_config(folder: Path) -> dict[str, int | None]:
    """The model's config.json is the authority on which ids end or pad the text."""
    config_file = folder / "config.json"
    if not config_file.exists():
        return {}
    config = json.loads(config_file.read_text(encoding="utf-8"))
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return {"eos": eos, "bos": config.get("bos_token_id"), "pad": config.get("pad_token_id")}


def load_tokenizer(folder: Path) -> Tokenizer:
    folder = Path(folder)
    for name in SENTENCEPIECE_FILES:
        if (folder / name).exists():
            return SentencePieceTokenizer(folder / name, _special_ids_from_config(folder))
    return HFTokenizer(folder)


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, one token at a time.

    Decoding the whole sequence each time keeps sentencepiece's spacing right; a delta is held
    back while the text ends in U+FFFD, i.e. a multi-byte character still split across
    byte-fallback tokens. Works for kana-only text, unlike transformers' TextIteratorStreamer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        # If the decoder re-spaced earlier text, send nothing now and carry on from the new text.
        delta = text[len(self.text) :] if text.startswith(self.text) else ""
        self.text = text
        return delta
