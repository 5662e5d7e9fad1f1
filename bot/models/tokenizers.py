"""Tokenizers, loaded so that they encode exactly as the model was trained.

transformers 5 builds a tokenizers-backed `T5Tokenizer` for rinna/LINE-style sentencepiece
models that adds a leading `▁`, collapses spaces, drops `\\n`, has no byte fallback and appends
`</s>` (see README "Tokenizers"). So a model folder with a sentencepiece `.model` file is encoded
by `sentencepiece` itself; other models (BPE `tokenizer.json`) go through `AutoTokenizer`, with
the `tokenizer.json` pipeline used exactly as shipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

SENTENCEPIECE_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.model")
# Markup such as `<NL>` or `[MASK]`: kept as written when lower-casing, if it is one piece.
_MARKUP = re.compile(r"<[^<>\s]{1,20}>|\[[^\[\]\s]{1,20}\]")
_BYTE_TOKEN = re.compile(r"<\|byte(\d{1,3})\|>")
_TAG = re.compile(r"<[^<>\s]+>")
# abeja's decoder writes these placeholders as a stand-in character (ǀ, ▀, ‖); kept as the tag
# they are, post-processing removes them like its other placeholders (<URL>, <DATE>, …).
_PLACEHOLDERS = frozenset({"<KIGOU>", "<BLOCK>", "<U2000U2BFF>"})


def _markup(tokens: Iterable[str]) -> frozenset[str]:
    """Tokens that are markup; a declared token of plain text or spaces (some BPE files add
    runs of spaces as tokens) is neither removed from replies nor defused in users' text."""
    return frozenset(t for t in tokens if t and not any(c.isspace() for c in t))


class Tokenizer(Protocol):
    """What the bot needs of a tokenizer. Encoding never adds special tokens."""

    eos_id: int | None
    pad_id: int | None
    bos_id: int | None
    # Every special, control, placeholder and byte token the tokenizer declares, as written
    # (`</s>`, `<NL>`, `<|endoftext|>`, abeja's `<URL>` and `<|byte10|>`). Users' text must not
    # reach the model as one of them, and the model's text must not reach users with them.
    special_tokens: frozenset[str]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def has_piece(self, piece: str) -> bool: ...


class SentencePieceTokenizer:
    """`lower_case`: the model was trained on lower-cased text (rinna's GPT-2 models say
    `do_lower_case` in tokenizer_config.json; their vocabulary has no upper-case pieces)."""

    def __init__(
        self,
        model_file: Path,
        special_ids: dict[str, int | None] | None = None,
        *,
        lower_case: bool = False,
    ) -> None:
        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.lower_case = lower_case
        special = special_ids or {}

        def pick(name: str, own: int) -> int | None:
            value = special.get(name)
            if value is not None:
                return value
            return own if own >= 0 else None

        self.eos_id = pick("eos", self.sp.eos_id())
        self.bos_id = pick("bos", self.sp.bos_id())
        self.pad_id = pick("pad", self.sp.pad_id())
        # User-defined symbols such as rinna's `<NL>` are ordinary pieces to the Python API;
        # any piece written as markup counts.
        sp = self.sp
        self.special_tokens = _markup(
            sp.id_to_piece(i)
            for i in range(sp.get_piece_size())
            if sp.is_control(i)
            or sp.is_unknown(i)
            or sp.is_byte(i)
            or _MARKUP.fullmatch(sp.id_to_piece(i))
        )

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(self._lower(text) if self.lower_case else text)

    def _lower(self, text: str) -> str:
        """Lower-case all but markup the model has as one piece (`<NL>`, `[MASK]`), as the slow
        tokenizers of transformers 4 did with `do_lower_case` (special tokens kept as written)."""
        parts, start = [], 0
        for match in _MARKUP.finditer(text):
            piece = match.group(0)
            parts.append(text[start : match.start()].lower())
            parts.append(piece if self.has_piece(piece) else piece.lower())
            start = match.end()
        parts.append(text[start:].lower())
        return "".join(parts)

    def decode(self, ids: list[int]) -> str:
        # Models often have more embedding rows than the tokenizer has pieces (padded vocab);
        # an id past the tokenizer's end has no text.
        # `<unk>` would read " ⁇ "; models without byte fallback (rinna's GPT-2) can generate it.
        size, unk = self.sp.vocab_size(), self.sp.unk_id()
        return self.sp.decode([i for i in ids if 0 <= i < size and i != unk])

    def has_piece(self, piece: str) -> bool:
        piece_id = self.sp.piece_to_id(piece)
        return piece_id != self.sp.unk_id() and self.sp.id_to_piece(piece_id) == piece


class HFTokenizer:
    """A tokenizer through transformers: a BPE `tokenizer.json` (open-calm, GPT-Neo) or abeja's
    GPTNeoXJapanese vocabulary (`vocab.txt` + `emoji.json`)."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        self.hf = AutoTokenizer.from_pretrained(str(folder))
        if (Path(folder) / "tokenizer.json").exists() and type(
            self.hf
        ) is not PreTrainedTokenizerFast:
            # transformers 5's GPT2Tokenizer and GPTNeoXTokenizer keep only the vocabulary and
            # merges of tokenizer.json and rebuild normalizer and pre-tokenizer from class
            # defaults, so a file with NFKC or a prefix space (what GPT-Neo's tokenizer trainer
            # writes) would encode unlike training. Use the file as shipped, same special tokens.
            special = {k: v for k, v in self.hf.special_tokens_map.items() if isinstance(v, str)}
            self.hf = PreTrainedTokenizerFast.from_pretrained(str(folder), **special)
        # GPTNeoXJapaneseTokenizer decodes each <|byteN|> token on its own, which turns every
        # character spelt in bytes into U+FFFD; runs of byte tokens are joined here instead.
        self._subword = getattr(self.hf, "subword_tokenizer", None)
        self.eos_id = self.hf.eos_token_id
        self.bos_id = self.hf.bos_token_id
        self.pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else self.eos_id
        declared = {*self.hf.all_special_tokens}
        declared |= {token.content for token in self.hf.added_tokens_decoder.values()}
        if self._subword is not None:
            # abeja's vocabulary lists its byte, emoji and placeholder tags as ordinary entries.
            declared |= {
                token
                for entries in self._subword.ids_to_tokens.values()
                for token in entries
                if _TAG.fullmatch(token)
            }
        self.special_tokens = _markup(declared)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        if self._subword is None:
            return self.hf.decode(ids, skip_special_tokens=False)
        parts: list[str] = []
        pending = bytearray()
        for token_id in ids:
            token = self._subword.ids_to_tokens.get(token_id, [""])[0]
            byte = _BYTE_TOKEN.fullmatch(token)
            if byte:
                pending.append(int(byte.group(1)))
                continue
            if pending:
                parts.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if token in _PLACEHOLDERS:
                parts.append(token)
            elif token:  # <BR> becomes "\n", <SP> " ", emoji tags their emoji
                parts.append(self._subword.convert_id_to_token(token_id))
        if pending:
            parts.append(pending.decode("utf-8", errors="replace"))
        return "".join(parts)

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


def _lower_case(folder: Path) -> bool:
    """rinna's GPT-2 models were trained on lower-cased text and say so with `do_lower_case` in
    tokenizer_config.json (transformers' T5Tokenizer ignores it; their cards set it by hand)."""
    config_file = folder / "tokenizer_config.json"
    if not config_file.exists():
        return False
    return json.loads(config_file.read_text(encoding="utf-8")).get("do_lower_case") is True


def load_tokenizer(folder: Path) -> Tokenizer:
    folder = Path(folder)
    for name in SENTENCEPIECE_FILES:
        if (folder / name).exists():
            return SentencePieceTokenizer(
                folder / name, _special_ids_from_config(folder), lower_case=_lower_case(folder)
            )
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
