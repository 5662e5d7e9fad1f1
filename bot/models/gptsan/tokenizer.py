"""GPTSAN-japanese's own tokenizer: `vocab.txt` + `emoji.json`, no transformers.

Encoding normalises the text (spaces → `<SP>`, line breaks → `<BR>`, tabs → `<TAB>`, dashes →
`ー`, emoji → their `<|emojiN|>` tags), then scans it left to right: at each position every
vocabulary word that starts there is a candidate (up to three characters, or any length for
markup that starts with `<`), and the candidate with the lowest id wins, not the longest. A
character no word covers becomes `<KIGOU>` or `<U2000U2BFF>` for two symbol ranges, else its
UTF-8 bytes as `<|byteN|>`. Special tokens written in the text (`<|segmenter|>`, …) are cut out
first and become their ids. This is what transformers 4.x's GPTSanJapaneseTokenizer did; the
reference tests check it id for id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VOCAB_FILE = "vocab.txt"
EMOJI_FILE = "emoji.json"

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
PAD = "<|separator|>"
UNK = "<|nottoken|>"
SEGMENTER = "<|segmenter|>"
BAG_OF_TOKEN = "<|bagoftoken|>"
SPECIAL_TOKENS = (UNK, PAD, BOS, EOS, SEGMENTER)

_NORMALISE = (
    (" ", "<SP>"),
    ("\u3000", "<SP>"),
    ("\r\n", "<BR>"),
    ("\n", "<BR>"),
    ("\r", "<BR>"),
    ("\t", "<TAB>"),
    ("\u2014", "ー"),  # em dash
    ("\u2212", "ー"),  # minus sign
)
# Markup that decodes to a character; other `<|…|>` tokens decode to nothing.
_MARKUP_TEXT = {
    "<SP>": " ",
    "<BR>": "\n",
    "<TAB>": "\t",
    "<BLOCK>": "▀",
    "<KIGOU>": "ǀ",
    "<U2000U2BFF>": "‖",
}
_BYTE = re.compile(r"<\|byte(\d{1,3})\|>")
_DECLARED_MARKUP = re.compile(r"<[^<>\s]+>")
_PLAIN_LOOKAHEAD = 3  # words that do not start with "<" are matched up to this length


def read_vocabulary(text: str) -> list[list[str]]:
    """One entry per line: comma-separated spellings of one token (the first is how it
    decodes). A line that is only a comma is the comma itself."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [[line] if line == "," or "," not in line else line.split(",") for line in lines]


def normalise(text: str, emoji: dict[str, str]) -> str:
    for old, new in _NORMALISE:
        text = text.replace(old, new)
    for character, tag in emoji.items():
        text = text.replace(character, tag)
    return text


def _is_kigou(character: str) -> bool:
    """Latin-1 symbols and some spacing/combining marks (two UTF-8 bytes in set ranges)."""
    encoded = character.encode()
    if len(encoded) != 2:
        return False
    code = (encoded[0] << 8) | encoded[1]
    return (
        0xC2A1 <= code <= 0xC2BF
        or 0xC780 <= code <= 0xC783
        or 0xCAB9 <= code <= 0xCBBF
        or 0xCC80 <= code <= 0xCDA2
    )


def _is_u2000_block(character: str) -> bool:
    """Punctuation, arrows, box drawing and other symbols from U+2000 to U+2BFF."""
    encoded = character.encode()
    if len(encoded) != 3:
        return False
    code = (encoded[0] << 16) | (encoded[1] << 8) | encoded[2]
    return 0xE28080 <= code <= 0xE2B07F


def scan(text: str, vocab: dict[str, int], longest: int) -> list[str]:
    """Split normalised text into vocabulary words and fallback tokens."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + longest + 1) if text[pos] == "<" else pos + _PLAIN_LOOKAHEAD
        best: tuple[int, str] | None = None
        for stop in range(min(end, len(text)), pos, -1):
            word = text[pos:stop]
            if word not in vocab:
                continue
            if word[0] == "<" and len(word) > 2:  # markup: the longest one wins outright
                best = (vocab[word], word)
                break
            if best is None or vocab[word] < best[0]:
                best = (vocab[word], word)
        if best is not None:
            tokens.append(best[1])
            pos += len(best[1])
            continue
        character = text[pos]
        if _is_kigou(character):
            tokens.append("<KIGOU>")
        elif _is_u2000_block(character):
            tokens.append("<U2000U2BFF>")
        else:
            tokens.extend(f"<|byte{b}|>" for b in character.encode())
        pos += 1
    return tokens


def tokens_to_text(tokens: Sequence[str], emoji_inverse: dict[str, str]) -> str:
    """Join tokens into text: runs of byte tokens decode together (a character spelt in bytes
    survives), markup becomes its character, `<|bagoftoken|>` repeats the previous piece three
    times, other `<|…|>` tokens vanish."""
    pieces: list[str] = []
    pending = bytearray()
    for token in tokens:
        byte = _BYTE.fullmatch(token)
        if byte:
            pending.append(int(byte.group(1)))
            continue
        if pending:
            pieces.append(pending.decode("utf-8", errors="replace"))
            pending.clear()
        if token in emoji_inverse:
            pieces.append(emoji_inverse[token])
        elif token in _MARKUP_TEXT:
            pieces.append(_MARKUP_TEXT[token])
        elif token == BAG_OF_TOKEN:
            if pieces:
                pieces.extend([pieces[-1]] * 3)
        elif not (token.startswith("<|") and token.endswith("|>")):
            pieces.append(token)
    if pending:
        pieces.append(pending.decode("utf-8", errors="replace"))
    return "".join(pieces)


@dataclass(frozen=True)
class Encoded:
    """Ids as the model reads them, with the prefix (token type 1) before the segmenter."""

    input_ids: list[int]
    token_type_ids: list[int]


class GPTSanTokenizer:
    """The bot's tokenizer protocol (`encode` adds nothing) plus `encode_with_prefix`, which
    builds the model's input as transformers 4.x did: `<|startoftext|>`, prefix, segmenter,
    text."""

    def __init__(self, vocab_lines: list[list[str]], emoji: dict[str, dict[str, str]]) -> None:
        self.spellings = vocab_lines
        self.vocab = {word: i for i, words in enumerate(vocab_lines) for word in words}
        self.emoji = dict(emoji.get("emoji", {}))
        self.emoji_inverse = dict(emoji.get("emoji_inv", {}))
        self.longest = max((len(word) for word in self.vocab), default=1)
        self.unk_id = self.vocab.get(UNK)
        self.eos_id: int | None = self.vocab.get(EOS)
        self.bos_id: int | None = self.vocab.get(BOS)
        self.pad_id: int | None = self.vocab.get(PAD)
        self.segmenter_id = self.vocab.get(SEGMENTER)
        specials = sorted((t for t in SPECIAL_TOKENS if t in self.vocab), key=len, reverse=True)
        # Every markup-shaped word (`<|segmenter|>`, `<BR>`, `<URL>`, `<|byte10|>`, emoji tags):
        # users' text must not reach the model as one, nor the model's text reach users.
        self.special_tokens = frozenset(
            word for word in self.vocab if _DECLARED_MARKUP.fullmatch(word)
        )
        self._special = re.compile("|".join(map(re.escape, specials))) if specials else None

    @classmethod
    def from_folder(cls, folder: Path) -> GPTSanTokenizer:
        folder = Path(folder)
        lines = read_vocabulary((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        emoji = json.loads((folder / EMOJI_FILE).read_text(encoding="utf-8"))
        return cls(lines, emoji)

    def __len__(self) -> int:
        return len(self.spellings)

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        start = 0
        for match in self._special.finditer(text) if self._special else ():
            tokens += scan(
                normalise(text[start : match.start()], self.emoji), self.vocab, self.longest
            )
            tokens.append(match.group(0))
            start = match.end()
        tokens += scan(normalise(text[start:], self.emoji), self.vocab, self.longest)
        return tokens

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(token, self.unk_id) for token in self.tokenize(text)]  # type: ignore[misc]

    def encode_with_prefix(self, text: str, prefix_text: str = "") -> Encoded:
        """`tokenizer(text, prefix_text=…)` of transformers 4.x: the segmenter is added unless
        the text already has one; everything before the first segmenter is prefix."""
        head = BOS if self.bos_id is not None else ""
        sep = SEGMENTER if SEGMENTER not in text and self.segmenter_id is not None else ""
        ids = self.encode(head + prefix_text + sep + text)
        return Encoded(ids, prefix_token_types(ids, self.segmenter_id))

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.spellings[i][0] for i in ids if 0 <= i < len(self.spellings)]
        return tokens_to_text(tokens, self.emoji_inverse)

    def has_piece(self, piece: str) -> bool:
        return piece in self.vocab


def prefix_token_types(ids: Sequence[int], segmenter_id: int | None) -> list[int]:
    """1 for the tokens before the first segmenter (the prefix, read both ways), 0 after."""
    prefix = list(ids).index(segmenter_id) if segmenter_id in ids else 0
    return [1] * prefix + [0] * (len(ids) - prefix)
