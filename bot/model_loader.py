"""Load a model the way a user names it: `demo`, a local folder, or a Hugging Face hub id.

Everything goes through `AutoModelForCausalLM.from_pretrained` on a local folder; a hub id is
first resolved to its downloaded snapshot. Called only on the model worker's thread.
"""

from __future__ import annotations

import errno
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.demo_model import DEMO_NAME, METADATA_FILE, ensure_demo_model
from bot.errors import ModelLoadError, shorten
from bot.model_identity import detect
from bot.prompt_format import PromptFormat
from bot.registry import find_entry
from bot.sampling import SamplingParams
from bot.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_NAME_MAX = 96  # the Hub's limit for an organisation or repository name
_TOKENIZER = ("spiece.model", "tokenizer.json", "vocab.txt", "tokenizer_config.json")
_WEIGHTS = ("*.safetensors", "*.bin")
_WEIGHT_PATTERNS = ["*.json", "*.model", "*.txt", "*.safetensors", "tokenizer*"]
_OFFLINE_HINT = (
    "ネットワークのない環境では MODEL=demo（同梱のデモモデル）か、"
    "ダウンロード済みモデルのフォルダのパス（例: MODEL=/models/rinna-3.6b）を指定してください。"
)


@dataclass
class LoadOptions:
    device: str = "auto"  # auto / cuda / cpu
    dtype: str = "auto"  # auto / fp16 / bf16 / fp32
    quantization: str = "none"  # none / 8bit / 4bit (bitsandbytes, CUDA only)
    prompt_format: str = "auto"
    cache_dir: Path = Path("./data/models")
    hf_token: str | None = None


@dataclass
class LoadedModel:
    name: str
    folder: Path
    model: Any
    tokenizer: Tokenizer
    prompt_format: PromptFormat
    context_length: int
    device: str
    dtype: str
    is_demo: bool
    parameters: int
    sampling_defaults: SamplingParams = field(default_factory=SamplingParams)
    quantization: str = "none"
    format_reason: str = ""  # why this prompt format, for /status (Japanese)
    supports_lora: bool = True  # False for families peft cannot adapt (GPTSAN)


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "DEVICE=cuda ですが GPU が見つかりません。DEVICE=auto か DEVICE=cpu にしてください。"
        )
    return requested


def resolve_dtype(requested: str, device: str) -> Any:
    import torch

    if requested == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if requested == "fp16" and device == "cpu":
        raise ModelLoadError(
            "DTYPE=fp16 は CPU では使えません。DTYPE=fp32（または bf16）にしてください。"
        )
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[requested]


def quantization_config(quantization: str, device: str, dtype: Any) -> Any:
    """A BitsAndBytesConfig for 8-bit/4-bit, or None; impossible requests fail clearly."""
    if quantization == "none":
        return None
    if device != "cuda":
        raise ModelLoadError(
            f"QUANTIZATION={quantization} は GPU（DEVICE=cuda）でだけ使えます。"
            "CPU では QUANTIZATION=none にしてください。"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f"QUANTIZATION={quantization} には bitsandbytes が必要です: "
            "pip install -e '.[quantization]' を実行するか、QUANTIZATION=none にしてください。"
        ) from None
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,  # QLoRA's setting: ~0.4 bit a parameter less
        bnb_4bit_compute_dtype=dtype,
    )


def _name_too_long(spec: str) -> ModelLoadError:
    return ModelLoadError(
        f"モデル名が長すぎます（{len(spec)} 文字: {shorten(spec, 30)}）。Hugging Face の ID（例: "
        "rinna/japanese-gpt-neox-3.6b-instruction-ppo）かフォルダのパスを指定してください。"
    )


def resolve_folder(spec: str, options: LoadOptions) -> Path:
    """The local folder holding the model named by `spec`."""
    spec = spec.strip()
    if spec == DEMO_NAME:
        return ensure_demo_model(options.cache_dir)
    entry = find_entry(spec)
    if entry is not None:
        spec = entry.hub_id
    path = Path(spec).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _name_too_long(spec) from exc
        raise ModelLoadError(
            f"フォルダ {shorten(str(path), 60)} を開けません（{exc.strerror or type(exc).__name__}）。",
            detail=str(exc),
        ) from exc
    if exists:
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"フォルダ {shorten(str(path), 60)} に config.json がありません。"
                "モデルのフォルダを指定してください。"
            )
        return path
    if _HUB_ID.match(spec) and max(len(part) for part in spec.split("/")) > _HUB_NAME_MAX:
        raise _name_too_long(spec)
    if not _HUB_ID.match(spec):
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」が見つかりません。Hugging Face の ID（例: rinna/japanese-"
            f"gpt-neox-3.6b-instruction-ppo）かフォルダのパスを指定してください。{_OFFLINE_HINT}"
        )
    return _download(spec, options)


def _download(repo_id: str, options: LoadOptions) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    def fetch(patterns: list[str]) -> Path:
        try:  # a copy already in the cache needs no network
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except (OSError, HfHubHTTPError):
            return Path(snapshot_download(repo_id, allow_patterns=patterns, token=options.hf_token))

    try:
        folder = fetch(_WEIGHT_PATTERNS)
        if not any(folder.glob("*.safetensors")):  # older repos ship only pytorch_model.bin
            folder = fetch([*_WEIGHT_PATTERNS, "*.bin"])
    except (OSError, HfHubHTTPError, ValueError) as exc:
        log.debug("download of %s failed", repo_id, exc_info=True)
        raise ModelLoadError(
            f"モデル「{repo_id}」をダウンロードできませんでした（{type(exc).__name__}）。{_OFFLINE_HINT}",
            detail=str(exc),
        ) from exc
    return folder


def _metadata(folder: Path) -> dict[str, Any]:
    file = folder / METADATA_FILE
    return read_json_file(file) if file.exists() else {}


def read_json_file(file: Path) -> dict[str, Any]:
    """The JSON object in one of the model folder's files; a ModelLoadError naming the file if
    it cannot be read (transformers' own errors do not say which file was bad)."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        reason = "UTF-8 のテキストではありません"
    except json.JSONDecodeError as exc:
        reason = f"JSON として {exc.lineno} 行目が正しくありません"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if isinstance(value, dict):
            return value
        reason = "中身が JSON のオブジェクトではありません"
    raise ModelLoadError(
        f"モデルのフォルダ {shorten(str(file.parent), 60)} の {file.name} を読み込めません"
        f"（{reason}）。ファイルを直すか、モデルをダウンロードし直してください。"
    )


def _check_folder(folder: Path) -> None:
    """Fail with a message naming the file for what transformers reports only vaguely."""
    read_json_file(folder / "config.json")
    if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin")):
        raise ModelLoadError(
            f"モデルのフォルダ {shorten(str(folder), 60)} に重みファイル（*.safetensors か *.bin）が"
            "ありません。ダウンロードし直してください。"
        )


def damaged_weights(folder: Path, exc: Exception) -> ModelLoadError:
    """A weight file that cannot be read: truncated by an interrupted download, or garbage."""
    return ModelLoadError(
        f"モデルのフォルダ {shorten(str(folder), 60)} の重みファイル（{_files(folder, _WEIGHTS)}）を"
        "読み込めません。壊れているか途中までしかありません。ダウンロードし直してください。",
        detail=str(exc),
    )


def _files(folder: Path, patterns: tuple[str, ...]) -> str:
    names = sorted({p.name for pattern in patterns for p in folder.glob(pattern)})
    return "、".join(names[:3]) + ("…" if len(names) > 3 else "") if names else "なし"


@contextmanager
def _quiet_progress(quiet: bool) -> Iterator[None]:
    """Real models show loading progress; the demo model loads too fast to need it."""
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _is_gptsan(spec: str, folder: Path | None) -> bool:
    from bot.models.gptsan.loading import is_gptsan_folder

    entry = find_entry(spec)
    if entry is not None:
        return entry.tokenizer == "gptsan"
    if folder is None:
        path = Path(spec.strip()).expanduser()
        try:
            folder = path if path.is_dir() else None
        except OSError:  # a name too long for a path: resolve_folder says so clearly
            folder = None
    return folder is not None and is_gptsan_folder(folder)


def _load_gptsan(spec: str, options: LoadOptions, device: str, dtype: Any) -> LoadedModel:
    from bot.models.gptsan.serving import load_gptsan_model

    return load_gptsan_model(spec, options, device, dtype)


def load_model(spec: str, options: LoadOptions) -> LoadedModel:
    """Load model and tokenizer; every failure becomes a ModelLoadError saying what to change,
    so a bad `/model` name or a damaged folder never costs the model that is serving."""
    try:
        return _load_model(spec, options)
    except ModelLoadError as exc:
        log.warning(
            "could not load model %s: %s",
            shorten(spec, 60),
            shorten(str(exc.__cause__ or exc), 300),
        )
        raise
    except Exception as exc:
        # Not a failure we know: keep the traceback for the operator, answer the user clearly.
        log.warning("could not load model %s", shorten(spec, 60), exc_info=True)
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」を読み込めませんでした（{type(exc).__name__}）。"
            "フォルダの中身が揃っているか確かめてください。",
            detail=str(exc),
        ) from exc


def _load_model(spec: str, options: LoadOptions) -> LoadedModel:
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if _is_gptsan(spec, None):  # transformers 5 dropped GPTSAN; the project has its own
        return _load_gptsan(spec, options, device, dtype)
    quantization = quantization_config(options.quantization, device, dtype)
    folder = resolve_folder(spec, options)
    if _is_gptsan(spec, folder):  # a hub id the catalogue does not name
        return _load_gptsan(spec, options, device, dtype)
    _check_folder(folder)
    meta = _metadata(folder)
    entry = find_entry(spec)
    extra: dict[str, Any] = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": 0}}
    try:
        tokenizer = load_tokenizer(folder)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(
            f"モデルのフォルダ {shorten(str(folder), 60)} のトークナイザ（{_files(folder, _TOKENIZER)}）"
            f"を読み込めません（{type(exc).__name__}）。モデルをダウンロードし直してください。",
            detail=str(exc),
        ) from exc
    try:
        with _quiet_progress(bool(meta.get("demo"))):
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **extra)
        if quantization is None:
            model.to(device)  # where a GPU runs out of memory, if it does
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」を読み込むメモリが足りません。小さいモデルか "
            "DTYPE=fp16/bf16 を試してください。"
        ) from exc
    except SafetensorError as exc:
        raise damaged_weights(folder, exc) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」を読み込めませんでした: {type(exc).__name__}: "
            f"{str(exc)[:200]}",
            detail=str(exc),
        ) from exc
    if entry is not None and entry.lower_case and hasattr(tokenizer, "lower_case"):
        tokenizer.lower_case = True  # the card lower-cases by hand; configs may not say so
    model.eval()

    detected = detect(
        spec,
        folder,
        setting=options.prompt_format,
        has_nl_piece=tokenizer.has_piece("<NL>"),
        metadata=meta,
    )
    if (
        detected.entry is not None
        and detected.entry.lower_case
        and hasattr(tokenizer, "lower_case")
    ):
        tokenizer.lower_case = True  # identified from the folder, not the name given
    prompt_format = detected.prompt_format
    log.info("model %s: prompt format %s, from %s", spec, prompt_format.name, detected.reason())
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    # The card's context length, but never past what the weights have positions for.
    known = [int(n) for n in (detected.context_length, positions) if n]
    context = min(known) if known else 2048
    return LoadedModel(
        name=spec,
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        prompt_format=prompt_format,
        context_length=int(context),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        is_demo=bool(meta.get("demo")),
        parameters=sum(p.numel() for p in model.parameters()),
        sampling_defaults=detected.sampling,
        quantization=options.quantization,
        format_reason=detected.reason(japanese=True),
    )
