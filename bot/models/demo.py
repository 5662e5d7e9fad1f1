"""The demo model: built here, offline, in about a second, and saved in Hugging Face format.

A sentencepiece tokenizer configured like rinna's (`<NL>` as one piece, byte fallback, pad 0,
unk 1, bos 2, eos 3) is trained on Japanese conversation text shipped with the project, and a
randomly initialised tiny GPTNeoX is saved beside it. The bot then loads the folder through the
same `from_pretrained` path as any real model. Its replies are gibberish by design.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from bot.models.files import METADATA_FILE

log = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_VERSION = "v1"


def demo_corpus_lines() -> list[str]:
    text = resources.files("bot").joinpath("assets/demo_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_demo_tokenizer(lines: list[str], vocab_size: int = 2000) -> bytes:
    """Train a rinna-style sentencepiece model; returns the serialized model."""
    import sentencepiece as spm

    # Join some lines with <NL> so the trainer sees the piece used between turns.
    sentences = lines + ["<NL>".join(lines[i : i + 2]) for i in range(0, len(lines) - 1, 2)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        byte_fallback=True,
        user_defined_symbols=["<NL>"],
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        normalization_rule_name="nmt_nfkc",
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build_demo_model(folder: Path, *, seed: int = 0) -> None:
    """Write tokenizer, config and random weights into `folder` (which must not exist)."""
    import sentencepiece as spm
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    folder.mkdir(parents=True)
    sp_bytes = train_demo_tokenizer(demo_corpus_lines())
    (folder / "spiece.model").write_bytes(sp_bytes)
    vocab_size = spm.SentencePieceProcessor(model_proto=sp_bytes).vocab_size()

    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=1024,
        rotary_pct=1.0,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config)
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        hf_logging.enable_progress_bar()
    (folder / METADATA_FILE).write_text(
        json.dumps({"prompt_format": "rinna", "demo": True, "context_length": 1024}, indent=2),
        encoding="utf-8",
    )


def ensure_demo_model(cache_dir: Path) -> Path:
    """The demo model's folder in `cache_dir`, building it the first time. Safe if two processes
    race: each builds in a private temporary folder and the first rename wins."""
    target = Path(cache_dir) / f"{DEMO_NAME}-{DEMO_VERSION}"
    if (target / METADATA_FILE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=target.parent))
    try:
        build_demo_model(scratch / "model")
        try:
            os.replace(scratch / "model", target)
            log.info("built the demo model in %s", target)
        except OSError:
            if not (target / METADATA_FILE).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
