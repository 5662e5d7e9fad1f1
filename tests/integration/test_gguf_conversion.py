"""`python -m bot convert MODEL --to gguf`: per family on tiny models built like the real ones.

The f16 check: llama.cpp's logits for the same ids must match the transformers model's.
Tolerance: f16 keeps 11 significant bits (relative error <= 2**-11 ~ 4.9e-4 per weight) and
llama.cpp computes GELU with the tanh approximation where GPTNeoX uses erf (they differ by at
most ~5e-4 of the activation); through two 64-wide layers that stays well under 1 % of the
logits' spread. Measured here: 4.0-4.3e-4 of the spread on all four families (q8_0: ~1e-2,
q4_k_m: ~5.5e-2). So the bound is 0.5 % of the spread of the reference logits (over ten times
what f16 costs, a fifth of what q8_0 costs), and the best next token must agree at every
position. A wrong weight layout (QKV not regrouped per head, GPT-2's
Conv1D not transposed) moves the logits by about their whole spread: the test below shows it
fails the same bound by a wide margin.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.engines.contract import LoadOptions
from bot.engines.llamacpp import convert as convert_module
from bot.engines.llamacpp.convert import ConversionError, convert, gguf_path, write_f16_gguf
from bot.models.tokenizers import load_tokenizer
from tests.engine_support import require_module
from tests.model_families import FamilyFolders

CONVERTIBLE = ("line-gpt-neox", "open-calm", "rinna-gpt2", "line-gpt2")
REFUSED = {
    "abeja-gpt-neox-japanese": "GPTNeoX-Japanese",
    "yellowback-gpt-neo": "GPT-Neo",
}
TOLERANCE = 0.005  # of the reference logits' spread; see the module docstring
TEXT = "こんにちは。今日はいい天気ですね。\n明日は雨が降るそうです。"


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> FamilyFolders:
    return FamilyFolders(tmp_path_factory.mktemp("families"))


def reference_logits(folder: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].numpy()


def gguf_logits(spec: str, cache: Path, ids: list[int]) -> np.ndarray:
    from bot.engines.llamacpp.engine import LlamaCppEngine, LlamaCppOptions, prompt_logits

    engine = LlamaCppEngine(LlamaCppOptions(max_rows=1, load=LoadOptions(cache_dir=cache)))
    loaded = engine.load(spec)
    try:
        return prompt_logits(loaded, ids)[:, : reference_logits_width(loaded)]
    finally:
        engine.release(loaded)


def reference_logits_width(loaded) -> int:  # the GGUF vocab is padded like the embedding
    return loaded.model.n_vocab


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (want.max() - want.min()))


@pytest.mark.parametrize("key", CONVERTIBLE)
def test_f16_gguf_logits_match_transformers(
    key: str, families: FamilyFolders, tmp_path: Path
) -> None:
    require_module("llama_cpp")
    folder = families.folder(key)
    options = LoadOptions(cache_dir=tmp_path)
    converted = convert(str(folder), "f16", options)
    assert converted.path == gguf_path(tmp_path, str(folder), "f16")
    ids = load_tokenizer(folder).encode(TEXT)
    assert len(ids) > 10
    want = reference_logits(folder, ids)
    got = gguf_logits(str(folder), tmp_path, ids)
    assert got.shape == want.shape
    assert relative_error(got, want) < TOLERANCE
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize(
    ("key", "wrong"),
    [
        ("line-gpt-neox", "regroup_qkv"),  # GPTNeoX's per-head QKV left as stored
        ("rinna-gpt2", "transpose"),  # GPT-2's Conv1D left as [in, out]
    ],
)
def test_a_wrong_weight_layout_fails_the_logits_check(
    key: str, wrong: str, families: FamilyFolders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_module("llama_cpp")
    folder = families.folder(key)
    if wrong == "regroup_qkv":
        monkeypatch.setattr(convert_module, "regroup_qkv", lambda weight, n_head: weight)
    else:
        original = convert_module.transform

        def untransposed(arch: str, name: str, tensor: np.ndarray, n_head: int):
            if name.endswith("attn.c_proj.weight"):  # square, so llama.cpp loads it anyway
                return tensor
            return original(arch, name, tensor, n_head)

        monkeypatch.setattr(convert_module, "transform", untransposed)
    convert(str(folder), "f16", LoadOptions(cache_dir=tmp_path))
    ids = load_tokenizer(folder).encode(TEXT)
    error = relative_error(gguf_logits(str(folder), tmp_path, ids), reference_logits(folder, ids))
    assert error > 5 * TOLERANCE


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_families_llama_cpp_cannot_run_are_refused_with_the_reason(
    key: str, families: FamilyFolders, tmp_path: Path
) -> None:
    with pytest.raises(ConversionError) as refused:
        convert(str(families.folder(key)), "q8_0", LoadOptions(cache_dir=tmp_path))
    assert REFUSED[key] in refused.value.user_message
    assert "ENGINE=transformers" in refused.value.user_message
    assert not list(tmp_path.rglob("*.gguf"))  # refused before writing anything


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantized_files_are_smaller_and_keep_the_bots_tokenizer(
    quant: str, families: FamilyFolders, tmp_path: Path
) -> None:
    require_module("llama_cpp")
    folder = families.folder("line-gpt-neox")
    quantized = convert(str(folder), quant, LoadOptions(cache_dir=tmp_path))
    f16 = gguf_path(tmp_path, str(folder), "f16")
    assert quantized.path.name.endswith(f"-{quant}.gguf")
    assert quantized.bytes < f16.stat().st_size
    beside = quantized.path.parent
    assert (beside / "spiece.model").read_bytes() == (folder / "spiece.model").read_bytes()
    facts = json.loads((beside / "bot_gguf.json").read_text(encoding="utf-8"))
    assert facts["prompt_format"] == "line"
    ids = load_tokenizer(folder).encode(TEXT)
    got = gguf_logits(str(folder), tmp_path, ids)  # the name finds the quantized file
    want = reference_logits(folder, ids)
    # Quantized weights move the logits more than f16 but keep them close to the model's.
    assert relative_error(got, want) < 0.25


def test_writing_a_tensor_table_streams_every_tensor(
    families: FamilyFolders, tmp_path: Path
) -> None:
    """The f16 writer alone (no llama.cpp): every weight is written once, under llama.cpp's
    names, with norms and biases in f32 and matrices in f16."""
    gguf = require_module("gguf")
    folder = families.folder("open-calm")
    ticks: list[int] = []
    written = write_f16_gguf(folder, tmp_path / "m.gguf", "m", ticks.append)
    reader = gguf.GGUFReader(str(written.path))
    names = {t.name: t for t in reader.tensors}
    assert len(ticks) == written.tensors == len(names) == 4 + 12 * 2
    assert names["blk.0.attn_qkv.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" in names and "token_embd.weight" in names


def test_regroup_qkv_puts_every_heads_query_first() -> None:
    heads, head_dim = 2, 2
    # Rows as GPTNeoX stores them: head 0 (q q k k v v), head 1 (q q k k v v).
    rows = np.array(["q0", "q0", "k0", "k0", "v0", "v0", "q1", "q1", "k1", "k1", "v1", "v1"])
    weight = np.stack([np.full(3, i) for i in range(12)])
    regrouped = convert_module.regroup_qkv(weight, heads)
    order = [rows[int(r[0])] for r in regrouped]
    assert order == ["q0", "q0", "q1", "q1", "k0", "k0", "k1", "k1", "v0", "v0", "v1", "v1"]
    assert head_dim * heads * 3 == len(order)
