"""Tiny stand-ins for every model family in the catalogue, built offline in a fraction of a second.

Each builder writes a folder shaped like the real model's hub snapshot: `config.json` and random
safetensors weights for the same transformers class, and the same kind of tokenizer files
(`spiece.model`, a BPE `tokenizer.json`, or GPTNeoXJapanese's `vocab.txt` + `emoji.json`) with
the special ids the real model uses. There is no `bot_model.json`: real folders have none, so the
bot must work from these files alone. Tokenizers are trained on the demo corpus; replies are
gibberish by design. rinna's GPTNeoX + sentencepiece family is the demo model itself.
"""

from __future__ import annotations

import collections
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.models.demo import demo_corpus_lines

# Small enough to build and run in well under a second; ~0.2-0.3M parameters with these vocabs.
HIDDEN, LAYERS, HEADS, CONTEXT = 64, 2, 4, 1024


def _save(model: Any, folder: Path) -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        hf_logging.enable_progress_bar()


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")


# --- tokenizers -------------------------------------------------------------------------------


def train_sentencepiece(
    *,
    normalization: str,
    ids: dict[str, int],
    pieces: dict[str, str] | None = None,
    lower_case: bool = False,
    byte_fallback: bool = True,
    newlines: bool = False,
    user_defined: tuple[str, ...] = (),
) -> bytes:
    """A unigram sentencepiece model trained on the demo corpus; returns the serialized model.

    `newlines` joins some lines with "\\n" so the model has seen them (LINE's format writes real
    newlines; with `nmt_nfkc` they would be folded into spaces, so LINE-style models use `nfkc`).
    `lower_case` trains on lower-cased text, as rinna's GPT-2 tokenizer was. `user_defined`
    pieces follow the special ids and are matched in typed text as one piece."""
    import sentencepiece as spm

    lines = demo_corpus_lines()
    if lower_case:
        lines = [line.lower() for line in lines] + ["hello world, gpu and ok"]
    sentences = list(lines)
    if newlines:
        sentences += ["\n".join(lines[i : i + 2]) for i in range(0, len(lines) - 1, 2)]
    pieces = pieces or {}
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=1000,
        hard_vocab_limit=False,
        character_coverage=0.98,  # the rarest characters fall back to bytes
        byte_fallback=byte_fallback,
        user_defined_symbols=list(user_defined),
        unk_id=ids["unk"],
        bos_id=ids["bos"],
        eos_id=ids["eos"],
        pad_id=ids["pad"],
        unk_piece=pieces.get("unk", "<unk>"),
        bos_piece=pieces.get("bos", "<s>"),
        eos_piece=pieces.get("eos", "</s>"),
        pad_piece=pieces.get("pad", "<pad>"),
        normalization_rule_name=normalization,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def train_byte_level_bpe(
    *, specials_first: list[str], specials_last: list[str], gpt_neo_style: bool
) -> Any:
    """A byte-level BPE `tokenizers.Tokenizer` trained on the demo corpus.

    `gpt_neo_style` adds what GPT-Neo's and GPT-NeoX's own tokenizer trainers write (NFKC and a
    prefix space); otherwise the pipeline is GPT-NeoX-20B's (NFC, no prefix space).
    `specials_first` get the first ids (open-calm: `<|endoftext|>` 0, `<|padding|>` 1);
    `specials_last` are added after the vocabulary, as GPT-2's `<|endoftext|>` is."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFKC() if gpt_neo_style else normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=gpt_neo_style)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=specials_first,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(demo_corpus_lines(), trainer)
    if specials_last:
        tokenizer.add_special_tokens(specials_last)
    return tokenizer


def write_bpe_tokenizer(
    folder: Path, tokenizer: Any, *, tokenizer_class: str, special: dict[str, str]
) -> None:
    """tokenizer.json plus the tokenizer_config.json and special_tokens_map.json of a hub repo."""
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": tokenizer_class, "add_prefix_space": False, **special},
    )
    _write_json(folder / "special_tokens_map.json", special)


GPT_NEOX_JAPANESE_TAGS = [
    "<SP>",
    "<BR>",
    "<TAB>",
    "<URL>",
    "<EMAIL>",
    "<TEL>",
    "<DATE>",
    "<PRICE>",
    "<BLOCK>",
    "<KIGOU>",
    "<U2000U2BFF>",
]
EMOJI = {"😊": "<|emoji1|>", "😄": "<|emoji1|>", "🎉": "<|emoji2|>", "👍": "<|emoji3|>"}


def write_gpt_neox_japanese_vocab(folder: Path) -> dict[str, int]:
    """`vocab.txt` + `emoji.json` laid out like abeja's: frequent words and characters, one
    line of variant spellings sharing an id, then byte, emoji and layout tags, then
    `<|startoftext|>` and `<|endoftext|>` last (abeja's bos = eos = 31999, the last id)."""
    lines = demo_corpus_lines()
    chars = collections.Counter(c for line in lines for c in line if not c.isspace())
    grams = collections.Counter(
        line[i : i + n] for line in lines for n in (2, 3) for i in range(len(line) - n + 1)
    )
    words = [
        g for g, count in grams.most_common(300) if count >= 3 and not any(map(str.isspace, g))
    ]
    # The tokenizer prefers the smallest id among matches, so words come before characters.
    vocab = [*words, "慶応,慶應"]
    vocab += [c for c, _ in chars.most_common(600) if c not in {"慶", "応", "應"}]
    vocab += [f"<|byte{i}|>" for i in range(256)]
    vocab += [f"<|emoji{i}|>" for i in range(1, 13)]
    vocab += [*GPT_NEOX_JAPANESE_TAGS, "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    emoji_inv = {tag: emoji for emoji, tag in reversed(EMOJI.items())}
    _write_json(folder / "emoji.json", {"emoji": EMOJI, "emoji_inv": emoji_inv})
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    _write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": "GPTNeoXJapaneseTokenizer", "do_clean_text": False, **special},
    )
    _write_json(folder / "special_tokens_map.json", special)
    return {token.split(",")[0]: i for i, token in enumerate(vocab)}


def _sentencepiece_config(folder: Path, sp_bytes: bytes, **extra: Any) -> int:
    """spiece.model and the T5Tokenizer tokenizer_config.json rinna's and LINE's repos ship."""
    import sentencepiece as spm

    (folder / "spiece.model").write_bytes(sp_bytes)
    sp = spm.SentencePieceProcessor(model_proto=sp_bytes)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "T5Tokenizer",
            "extra_ids": 0,
            "bos_token": sp.id_to_piece(sp.bos_id()),
            "eos_token": sp.id_to_piece(sp.eos_id()),
            "unk_token": sp.id_to_piece(sp.unk_id()),
            "pad_token": sp.id_to_piece(sp.pad_id()),
            **extra,
        },
    )
    return sp.vocab_size()


# --- the families -----------------------------------------------------------------------------


def build_line_gpt_neox(folder: Path, *, seed: int = 0) -> None:
    """LINE japanese-large-lm-3.6b-instruction-sft: GPTNeoX, sentencepiece (unk 0, bos 1, eos 2,
    pad 3 in the tokenizer) whose config.json says bos = eos = pad = 2."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    folder.mkdir(parents=True)
    sp_bytes = train_sentencepiece(
        normalization="nfkc", ids={"unk": 0, "bos": 1, "eos": 2, "pad": 3}, newlines=True
    )
    vocab_size = _sentencepiece_config(folder, sp_bytes)
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * HIDDEN,
        max_position_embeddings=CONTEXT,
        rotary_pct=1.0,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    _save(GPTNeoXForCausalLM(config), folder)


def build_open_calm(
    folder: Path, *, seed: int = 0, tokenizer_class: str = "PreTrainedTokenizerFast"
) -> None:
    """cyberagent/open-calm: GPTNeoX with a byte-level BPE tokenizer.json, `<|endoftext|>` 0 as
    bos and eos, `<|padding|>` 1."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    folder.mkdir(parents=True)
    tokenizer = train_byte_level_bpe(
        specials_first=["<|endoftext|>", "<|padding|>"], specials_last=[], gpt_neo_style=False
    )
    write_bpe_tokenizer(
        folder,
        tokenizer,
        tokenizer_class=tokenizer_class,
        special={
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|padding|>",
        },
    )
    config = GPTNeoXConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=4 * HIDDEN,
        max_position_embeddings=CONTEXT,
        rotary_pct=0.5,
        use_parallel_residual=False,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    _save(GPTNeoXForCausalLM(config), folder)


RINNA_GPT2_EXTRA_TOKENS = ("[CLS]", "[SEP]", "[MASK]")


def build_gpt2_sentencepiece(
    folder: Path, *, seed: int = 0, lower_case: bool = False, newlines: bool = False
) -> None:
    """GPT-2 with sentencepiece: unk 0, bos 1, eos 2, pad 3, as in rinna's japanese-gpt2 models
    (`lower_case`: trained on lower-cased text, `do_lower_case` in tokenizer_config.json, `[PAD]`,
    no byte fallback, `[CLS]` 4, `[SEP]` 5, `[MASK]` 6 declared in tokenizer_config.json; here
    user-defined pieces, the harder case, as sentencepiece matches those in typed text) and
    LINE's japanese-large-lm-1.7b (`newlines`: real newlines kept)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True)
    sp_bytes = train_sentencepiece(
        normalization="nfkc" if newlines else "nmt_nfkc",
        ids={"unk": 0, "bos": 1, "eos": 2, "pad": 3},
        pieces={"pad": "[PAD]"} if lower_case else None,
        lower_case=lower_case,
        byte_fallback=not lower_case,
        newlines=newlines,
        user_defined=RINNA_GPT2_EXTRA_TOKENS if lower_case else (),
    )
    extra: dict[str, Any] = {}
    if lower_case:
        cls, sep, mask = RINNA_GPT2_EXTRA_TOKENS
        extra = {"do_lower_case": True, "cls_token": cls, "sep_token": sep, "mask_token": mask}
    vocab_size = _sentencepiece_config(folder, sp_bytes, **extra)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_positions=CONTEXT,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        initializer_range=0.1,  # tied embeddings at the default 0.02 repeat one token forever
    )
    torch.manual_seed(seed)
    _save(GPT2LMHeadModel(config), folder)


def build_gpt_neox_japanese(folder: Path, *, seed: int = 0) -> None:
    """abeja/gpt-neox-japanese-2.7b: GPTNeoXJapanese with its own vocab.txt + emoji.json
    tokenizer (`\\n` is the `<BR>` token); config.json has bos = eos = the last id."""
    import torch
    from transformers import GPTNeoXJapaneseConfig, GPTNeoXJapaneseForCausalLM

    folder.mkdir(parents=True)
    vocab = write_gpt_neox_japanese_vocab(folder)
    eos = vocab["<|endoftext|>"]
    config = GPTNeoXJapaneseConfig(
        vocab_size=max(vocab.values()) + 1,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_multiple_size=4,
        max_position_embeddings=CONTEXT,
        bos_token_id=eos,
        eos_token_id=eos,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    _save(GPTNeoXJapaneseForCausalLM(config), folder)


def build_gpt_neo(folder: Path, *, seed: int = 0) -> None:
    """yellowback/gpt-neo-japanese-1.3B: GPT-Neo (global and local attention layers) with a
    byte-level BPE tokenizer.json written the way GPT-Neo's tokenizer trainer writes it (NFKC, a
    prefix space) and declared as GPT2Tokenizer; `<|endoftext|>` is the last id, bos = eos."""
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    folder.mkdir(parents=True)
    tokenizer = train_byte_level_bpe(
        specials_first=[], specials_last=["<|endoftext|>"], gpt_neo_style=True
    )
    eos = tokenizer.token_to_id("<|endoftext|>")
    write_bpe_tokenizer(
        folder,
        tokenizer,
        tokenizer_class="GPT2Tokenizer",
        special={
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
        },
    )
    config = GPTNeoConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=HIDDEN,
        num_layers=LAYERS,
        num_heads=HEADS,
        attention_types=[[["global", "local"], LAYERS // 2]],
        window_size=16,
        max_position_embeddings=CONTEXT,
        bos_token_id=eos,
        eos_token_id=eos,
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    _save(GPTNeoForCausalLM(config), folder)


@dataclass(frozen=True)
class Family:
    """One family's tiny model and what the bot must make of it."""

    key: str
    model_class: str
    tokenizer_kind: str  # sentencepiece | bpe | gpt-neox-japanese (as in the registry)
    stands_for: tuple[str, ...]  # catalogue names this family's loading path serves
    folder_name: str  # as a user's download would be named (formats are detected from names)
    prompt_format: str  # what the loader must pick for this folder (no PROMPT_FORMAT set)
    newline: str
    build: Callable[[Path], None]


FAMILIES: tuple[Family, ...] = (
    Family(
        "line-gpt-neox",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        ("line-3.6b-sft",),
        "line-corporation/japanese-large-lm-3.6b-instruction-sft",
        "line",
        "\n",
        build_line_gpt_neox,
    ),
    Family(
        "open-calm",
        "GPTNeoXForCausalLM",
        "bpe",
        ("open-calm-1b", "open-calm-3b", "open-calm-7b"),
        "cyberagent/open-calm-tiny",
        "plain",
        "\n",
        build_open_calm,
    ),
    Family(
        "rinna-gpt2",
        "GPT2LMHeadModel",
        "sentencepiece",
        ("rinna-gpt2-xsmall", "abeja-gpt2-large"),
        "rinna/japanese-gpt2-xsmall",
        "plain",
        "\n",
        lambda folder: build_gpt2_sentencepiece(folder, lower_case=True),
    ),
    Family(
        "line-gpt2",
        "GPT2LMHeadModel",
        "sentencepiece",
        ("line-1.7b-sft",),
        "line-corporation/japanese-large-lm-1.7b-instruction-sft",
        "line",
        "\n",
        lambda folder: build_gpt2_sentencepiece(folder, newlines=True),
    ),
    Family(
        "abeja-gpt-neox-japanese",
        "GPTNeoXJapaneseForCausalLM",
        "gpt-neox-japanese",
        ("abeja-neox-2.7b",),
        "abeja/gpt-neox-japanese-tiny",
        "plain",
        "\n",
        build_gpt_neox_japanese,
    ),
    Family(
        "yellowback-gpt-neo",
        "GPTNeoForCausalLM",
        "bpe",
        ("yellowback-neo-1.3b",),
        "yellowback/gpt-neo-japanese-tiny",
        "plain",
        "\n",
        build_gpt_neo,
    ),
)

FAMILY_BY_KEY = {family.key: family for family in FAMILIES}


class FamilyFolders:
    """Builds each family's folder the first time a test asks for it, once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, Path] = {}

    def folder(self, key: str) -> Path:
        if key not in self.built:
            family = FAMILY_BY_KEY[key]
            folder = self.root / family.folder_name
            family.build(folder)
            self.built[key] = folder
        return self.built[key]
