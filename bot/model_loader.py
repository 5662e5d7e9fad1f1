"""Load a model the way a user names it: `demo`, a local folder, or a Hugging Face hub id.

Everything goes through `AutoModelForCausalLM.from_pretrained` on a local folder; a hub id is
first resolved to its downloaded snapshot. Called only on the model worker's thread.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.demo_model import DEMO_NAME, METADATA_FILE, ensure_demo_model
from bot.errors import ModelLoadError
from bot.prompt_format import FORMATS, PromptFormat, detect_format
from bot.registry import find_entry
from bot.sampling import FORMAT_DEFAULTS, SamplingParams
from bot.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
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


def resolve_folder(spec: str, options: LoadOptions) -> Path:
    """The local folder holding the model named by `spec`."""
    spec = spec.strip()
    if spec == DEMO_NAME:
        return ensure_demo_model(options.cache_dir)
    entry = find_entry(spec)
    if entry is not None:
        spec = entry.hub_id
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"フォルダ {path} に config.json がありません。モデルのフォルダを指定してください。"
            )
        return path
    if not _HUB_ID.match(spec):
        raise ModelLoadError(
            f"モデル「{spec}」が見つかりません。Hugging Face の ID（例: rinna/japanese-gpt-neox-3.6b-"
            f"instruction-ppo）かフォルダのパスを指定してください。{_OFFLINE_HINT}"
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
    return json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}


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
        folder = path if path.is_dir() else None
    return folder is not None and is_gptsan_folder(folder)


def _load_gptsan(spec: str, options: LoadOptions, device: str, dtype: Any) -> LoadedModel:
    from bot.models.gptsan.serving import load_gptsan_model

    return load_gptsan_model(spec, options, device, dtype)


def load_model(spec: str, options: LoadOptions) -> LoadedModel:
    """Load model and tokenizer; every failure becomes a ModelLoadError saying what to change."""
    import torch
    from transformers import AutoModelForCausalLM

    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    if _is_gptsan(spec, None):  # transformers 5 dropped GPTSAN; the project has its own
        return _load_gptsan(spec, options, device, dtype)
    quantization = quantization_config(options.quantization, device, dtype)
    folder = resolve_folder(spec, options)
    if _is_gptsan(spec, folder):  # a hub id the catalogue does not name
        return _load_gptsan(spec, options, device, dtype)
    meta = _metadata(folder)
    entry = find_entry(spec)
    extra: dict[str, Any] = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": 0}}
    try:
        tokenizer = load_tokenizer(folder)
        with _quiet_progress(bool(meta.get("demo"))):
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **extra)
        if quantization is None:
            model.to(device)  # where a GPU runs out of memory, if it does
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"モデル「{spec}」を読み込むメモリが足りません。小さいモデルか DTYPE=fp16/bf16 を試してください。"
        ) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"モデル「{spec}」を読み込めませんでした: {type(exc).__name__}: {str(exc)[:200]}",
            detail=str(exc),
        ) from exc
    if entry is not None and entry.lower_case and hasattr(tokenizer, "lower_case"):
        tokenizer.lower_case = True  # the card lower-cases by hand; configs may not say so
    model.eval()

    format_name = options.prompt_format
    if format_name == "auto":
        format_name = meta.get("prompt_format") or (entry.prompt_format if entry else "auto")
    has_nl = tokenizer.has_piece("<NL>")
    if format_name == "auto":
        prompt_format = detect_format(entry.hub_id if entry else spec, has_nl)
    elif format_name == "plain" and has_nl:
        prompt_format = detect_format("", has_nl)
    else:
        prompt_format = FORMATS[format_name]

    config = model.config
    context = meta.get("context_length") or (entry.context_length if entry else None)
    context = context or getattr(config, "max_position_embeddings", None)
    context = context or getattr(config, "n_positions", None) or 2048
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
        sampling_defaults=entry.sampling if entry else FORMAT_DEFAULTS[prompt_format.name],
        quantization=options.quantization,
    )
