"""Convert a Hugging Face GPTNeoX or GPT-2 model to GGUF for llama.cpp, then quantize it.

`python -m bot convert MODEL --to gguf --quant q8_0|q4_k_m|f16` writes
`MODEL_CACHE_DIR/gguf/<name>/<name>-<quant>.gguf` and copies the model's tokenizer files and
config beside it, so `ENGINE=llamacpp` encodes and decodes with the bot's own tokenizer (the
sentencepiece parity work) and knows the prompt format; the vocabulary written into the GGUF is
only there because llama.cpp needs one to load.

Weight layouts follow llama.cpp's own `convert_hf_to_gguf.py`:
- GPTNeoX's fused `query_key_value` is stored per head as [q_h, k_h, v_h]; llama.cpp wants all
  heads' q, then k, then v, so the rows (and the bias) are regrouped.
- GPT-2's `Conv1D` weights are stored transposed ([in, out]); they are turned to [out, in].
- 2-D weights are written as f16 (then quantized), norms and biases stay f32, as llama.cpp
  expects.
GPTNeoX-Japanese and GPT-Neo are refused: llama.cpp has no such architectures.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot.engines.contract import LoadOptions
from bot.errors import ModelLoadError
from bot.models.hub import resolve_folder
from bot.models.tokenizers import SENTENCEPIECE_FILES

log = logging.getLogger(__name__)

QUANTS = ("f16", "q8_0", "q4_k_m")
# The files a converted model keeps beside its GGUF: the bot's tokenizer and the facts
# (special ids, context length, prompt format) the loader reads.
_SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "bot_model.json",
    *SENTENCEPIECE_FILES,
)
SOURCE_FILE = "bot_gguf.json"

REFUSED = {
    "gpt_neox_japanese": (
        "GPTNeoX-Japanese（abeja/gpt-neox-japanese など）は llama.cpp が対応していない構造"
        "（独自の注意機構とトークナイザー）のため GGUF に変換できません。ENGINE=transformers で"
        "使ってください。"
    ),
    "gpt_neo": (
        "GPT-Neo（yellowback/gpt-neo-japanese など）は llama.cpp が対応していない構造"
        "（局所注意の層）のため GGUF に変換できません。ENGINE=transformers で使ってください。"
    ),
}


class ConversionError(ModelLoadError):
    """The model cannot be converted; the message says why."""


@dataclass(frozen=True)
class Converted:
    path: Path
    quant: str
    tensors: int
    bytes: int


def converted_folder(cache_dir: Path, spec: str) -> Path:
    """Where `spec`'s GGUF files go: beside the model cache, one folder per model, named after
    the hub id (`rinna--japanese-gpt-neox-3.6b`) or, for a folder, the folder's name."""
    spec = spec.strip().rstrip("/")
    name = Path(spec).name if Path(spec).expanduser().is_dir() else spec
    safe = re.sub(r"[^\w.-]+", "--", name)[-120:] or "model"
    return Path(cache_dir) / "gguf" / safe


def gguf_path(cache_dir: Path, spec: str, quant: str) -> Path:
    folder = converted_folder(cache_dir, spec)
    return folder / f"{folder.name}-{quant}.gguf"


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def check_convertible(config: dict[str, Any]) -> str:
    """The llama.cpp architecture for a model config, or ConversionError with the reason."""
    model_type = str(config.get("model_type", ""))
    if model_type in REFUSED:
        raise ConversionError(REFUSED[model_type])
    if model_type == "gpt_neox":
        return "gptneox"
    if model_type == "gpt2":
        return "gpt2"
    raise ConversionError(
        f"モデルの種類「{model_type or '不明'}」は GGUF に変換できません"
        "（対応: GPTNeoX と GPT-2 の系統）。"
    )


# --- weights --------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(folder.glob("pytorch_model*.bin"))


def iter_weights(folder: Path) -> Iterator[tuple[str, Any]]:
    """Every tensor of the checkpoint as (name, torch tensor), one file at a time."""
    import torch

    files = _weight_files(folder)
    if not files:
        raise ConversionError(
            f"フォルダ {folder} に重みのファイル（*.safetensors / *.bin）がありません。"
        )
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    yield name, handle.get_tensor(name)
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
            yield from state.items()
            del state


def regroup_qkv(weight: np.ndarray, n_head: int) -> np.ndarray:
    """GPTNeoX's fused QKV rows [h0: q k v, h1: q k v, ...] -> [q h0 h1 ..., k ..., v ...].
    Works for the weight ([3*hidden, hidden]) and the bias ([3*hidden])."""
    head_dim = weight.shape[0] // (3 * n_head)
    grouped = weight.reshape((n_head, 3, head_dim, *weight.shape[1:]))
    return np.concatenate([grouped[:, i].reshape((-1, *weight.shape[1:])) for i in range(3)])


_SKIP = re.compile(r"(\.attn\.(masked_)?bias|\.attention\.(masked_)?bias|rotary_emb\.inv_freq)$")
_GPT2_TRANSPOSED = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")


def transform(arch: str, name: str, tensor: np.ndarray, n_head: int) -> np.ndarray | None:
    """The tensor as llama.cpp wants it, or None for buffers that are not weights."""
    if _SKIP.search(name):
        return None
    if arch == "gptneox" and name.endswith(".attention.query_key_value.weight"):
        return regroup_qkv(tensor, n_head)
    if arch == "gptneox" and name.endswith(".attention.query_key_value.bias"):
        return regroup_qkv(tensor, n_head)
    if arch == "gpt2" and name.endswith(_GPT2_TRANSPOSED):
        return np.ascontiguousarray(tensor.T)
    return tensor


def _gguf_name(tensor_map: Any, name: str) -> str:
    if name == "lm_head.weight":  # GPT-2's tied output, when saved
        return "output.weight"
    mapped = tensor_map.get_name(name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise ConversionError(f"重み {name} を GGUF の名前に対応付けられません。", detail=name)
    return mapped


# --- vocabulary -----------------------------------------------------------------------------


@dataclass
class Vocab:
    model: str  # "llama" (sentencepiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str]


def read_vocab(folder: Path, n_vocab: int) -> Vocab:
    """The vocabulary llama.cpp needs to load, padded to the embedding's rows."""
    import gguf

    types = gguf.TokenType
    for name in SENTENCEPIECE_FILES:
        if (folder / name).exists():
            import sentencepiece as spm

            sp = spm.SentencePieceProcessor(model_file=str(folder / name))
            tokens, scores, kinds = [], [], []
            for i in range(sp.vocab_size()):
                tokens.append(sp.id_to_piece(i))
                scores.append(float(sp.get_score(i)))
                if sp.is_unknown(i):
                    kinds.append(types.UNKNOWN)
                elif sp.is_control(i):
                    kinds.append(types.CONTROL)
                elif sp.is_byte(i):
                    kinds.append(types.BYTE)
                elif sp.is_unused(i):
                    kinds.append(types.UNUSED)
                else:
                    kinds.append(types.NORMAL)
            vocab = Vocab("llama", tokens, scores, [int(k) for k in kinds], [])
            break
    else:
        file = folder / "tokenizer.json"
        if not file.exists():
            raise ConversionError(
                "トークナイザーのファイル（spiece.model か tokenizer.json）が見つかりません。"
            )
        data = json.loads(file.read_text(encoding="utf-8"))
        by_id: dict[int, tuple[str, int]] = {
            i: (t, int(types.NORMAL)) for t, i in data["model"]["vocab"].items()
        }
        for added in data.get("added_tokens", []):
            kind = types.CONTROL if added.get("special") else types.USER_DEFINED
            by_id[int(added["id"])] = (added["content"], int(kind))
        size = max(by_id) + 1
        tokens = [by_id.get(i, (f"[PAD{i}]", int(types.UNUSED)))[0] for i in range(size)]
        kinds = [by_id.get(i, ("", int(types.UNUSED)))[1] for i in range(size)]
        merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
        vocab = Vocab("gpt2", tokens, [0.0] * size, kinds, merges)
    if len(vocab.tokens) > n_vocab:
        raise ConversionError(
            f"トークナイザーの語彙（{len(vocab.tokens)}）がモデルの埋め込み（{n_vocab} 行）より大きく、変換できません。"
        )
    for i in range(len(vocab.tokens), n_vocab):  # padded embedding rows (never generated)
        vocab.tokens.append(f"[PAD{i}]")
        vocab.scores.append(0.0)
        vocab.types.append(int(types.UNUSED))
    return vocab


# --- the writer -----------------------------------------------------------------------------


def _rope(config: dict[str, Any]) -> tuple[float, float]:
    """(rotary fraction, rope base) from a 4.x config (rotary_pct, rotary_emb_base) or a 5.x
    one (rope_parameters)."""
    rope = config.get("rope_parameters") or {}
    pct = config.get("rotary_pct", rope.get("partial_rotary_factor", 0.25))
    base = config.get("rotary_emb_base", rope.get("rope_theta", 10000))
    return float(pct), float(base)


def _special_ids(folder: Path, config: dict[str, Any]) -> dict[str, int | None]:
    from bot.models.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(folder)
    return {
        "bos": tokenizer.bos_id,
        "eos": tokenizer.eos_id,
        "pad": tokenizer.pad_id,
    }


def write_f16_gguf(
    folder: Path, out: Path, name: str, progress: Callable[[int], Any] | None = None
) -> Converted:
    """Write `folder`'s model as an f16 GGUF at `out`. `progress(n)` is told each tensor."""
    import gguf

    config = read_config(folder)
    arch = check_convertible(config)
    gguf_arch = gguf.MODEL_ARCH.GPTNEOX if arch == "gptneox" else gguf.MODEL_ARCH.GPT2
    if arch == "gptneox":
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        heads, context = config["num_attention_heads"], config.get("max_position_embeddings", 2048)
        ff = config.get("intermediate_size") or 4 * hidden
        eps = config.get("layer_norm_eps", 1e-5)
    else:
        hidden, layers = config["n_embd"], config["n_layer"]
        heads, context = config["n_head"], config.get("n_positions", 1024)
        ff = config.get("n_inner") or 4 * hidden
        eps = config.get("layer_norm_epsilon", 1e-5)
    tensor_map = gguf.get_tensor_name_map(gguf_arch, layers)

    # First pass: names, shapes and types (GGUF puts the tensor table before the data).
    infos: list[tuple[str, str, tuple[int, ...], Any]] = []
    n_vocab = 0
    for hf_name, tensor in iter_weights(folder):
        data = transform(arch, hf_name, tensor.float().numpy(), heads)
        if data is None:
            continue
        target = _gguf_name(tensor_map, hf_name)
        if target == "token_embd.weight":
            n_vocab = data.shape[0]
        dtype = np.float16 if data.ndim == 2 else np.float32
        infos.append((hf_name, target, data.shape, dtype))
    if n_vocab == 0:
        raise ConversionError("埋め込みの重みが見つかりません。", detail=str(folder))

    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf_arch])
    writer.add_name(name)
    writer.add_context_length(int(context))
    writer.add_embedding_length(int(hidden))
    writer.add_block_count(int(layers))
    writer.add_feed_forward_length(int(ff))
    writer.add_head_count(int(heads))
    writer.add_layer_norm_eps(float(eps))
    if arch == "gptneox":
        pct, base = _rope(config)
        writer.add_rope_dimension_count(int(pct * (hidden // heads)))
        writer.add_rope_freq_base(base)
        writer.add_parallel_residual(bool(config.get("use_parallel_residual", True)))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = read_vocab(folder, n_vocab)
    writer.add_tokenizer_model(vocab.model)
    if vocab.model == "gpt2":
        writer.add_tokenizer_pre("default")
        writer.add_token_merges(vocab.merges)
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    special = _special_ids(folder, config)
    if special["bos"] is not None:
        writer.add_bos_token_id(special["bos"])
    if special["eos"] is not None:
        writer.add_eos_token_id(special["eos"])
    if special["pad"] is not None:
        writer.add_pad_token_id(special["pad"])
    writer.add_add_bos_token(False)  # the bot builds every prompt's ids itself
    for _, target, shape, dtype in infos:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(target, shape, np.dtype(dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # Second pass: the data, one tensor in memory at a time.
    order = {hf_name: i for i, (hf_name, *_rest) in enumerate(infos)}
    pending: dict[int, np.ndarray] = {}
    next_index = 0
    for hf_name, tensor in iter_weights(folder):
        if hf_name not in order:
            continue
        _, _, _, dtype = infos[order[hf_name]]
        data = transform(arch, hf_name, tensor.float().numpy(), heads)
        assert data is not None
        pending[order[hf_name]] = np.ascontiguousarray(data.astype(dtype))
        while next_index in pending:
            writer.write_tensor_data(pending.pop(next_index))
            next_index += 1
            if progress:
                progress(1)
    writer.close()
    return Converted(out, "f16", len(infos), out.stat().st_size)


def quantize(src: Path, dst: Path, quant: str) -> None:
    """q8_0 / q4_k_m from an f16 GGUF, with llama.cpp's own quantizer."""
    from bot.engines.contract import require_engine_package

    llama_cpp = require_engine_package("llama_cpp", "pip install -e '.[llamacpp]'")
    # llama.cpp prints a line per tensor; the CLI's progress bar says enough.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    ftype = {
        "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    }[quant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    failed = llama_cpp.llama_model_quantize(
        str(src).encode("utf-8"), str(dst).encode("utf-8"), params
    )
    if failed:
        raise ConversionError(f"{quant} への量子化に失敗しました（コード {failed}）。")


def convert(
    spec: str,
    quant: str,
    options: LoadOptions,
    progress: Callable[[int, int], Callable[[int], Any]] | None = None,
) -> Converted:
    """Convert `spec` (a catalogue name, hub id or folder) to `quant`; returns the file.
    `progress(total, _)` makes the per-tensor callback (the CLI's progress bar)."""
    if quant not in QUANTS:
        raise ConversionError(f"--quant は {', '.join(QUANTS)} のどれかにしてください。")
    folder = resolve_folder(spec, options.cache_dir, options.hf_token)
    config = read_config(folder)
    check_convertible(config)  # refuse before any work
    target_dir = converted_folder(options.cache_dir, spec)
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in _SIDE_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, target_dir / name)
    from bot.models.facts import as_record, folder_facts
    from bot.models.tokenizers import load_tokenizer

    facts = folder_facts(spec, folder, load_tokenizer(folder), options.prompt_format)
    record = json.dumps(as_record(facts, spec), ensure_ascii=False, indent=2)
    (target_dir / SOURCE_FILE).write_text(record, encoding="utf-8")
    f16 = gguf_path(options.cache_dir, spec, "f16")
    n_tensors = sum(1 for _ in _tensor_names(folder))
    tick = progress(n_tensors + (1 if quant != "f16" else 0), 0) if progress else None
    if not f16.exists() or quant == "f16":
        partial = f16.with_suffix(".part")
        write_f16_gguf(folder, partial, spec, tick)
        partial.replace(f16)
    elif tick:
        tick(n_tensors)
    if quant == "f16":
        return Converted(f16, "f16", n_tensors, f16.stat().st_size)
    out = gguf_path(options.cache_dir, spec, quant)
    partial = out.with_suffix(".part")
    quantize(f16, partial, quant)
    partial.replace(out)
    if tick:
        tick(1)
    return Converted(out, quant, n_tensors, out.stat().st_size)


def _tensor_names(folder: Path) -> Iterator[str]:
    for file in _weight_files(folder):
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                yield from (n for n in handle.keys() if not _SKIP.search(n))  # noqa: SIM118
        else:
            yield from (n for n, _ in iter_weights(folder) if not _SKIP.search(n))
            return
