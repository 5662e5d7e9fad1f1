"""Load a model the way a user names it: `demo`, a local folder, or a Hugging Face hub id.

A hub id is first resolved to its downloaded snapshot (`bot.models.hub`); the folder then loads
through its family's own code when one is registered for its model_type
(`bot.models.families`), else through `AutoModelForCausalLM.from_pretrained`. Called only on the
model worker's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.engines.contract import LoadedModel, LoadOptions
from bot.errors import ModelLoadError, shorten
from bot.models.catalogue import find_entry
from bot.models.facts import context_length
from bot.models.families import Family, family_of_entry, family_of_folder
from bot.models.files import read_json, read_metadata
from bot.models.hub import resolve_folder
from bot.models.identity import detect
from bot.models.prompt_formats import FORMATS
from bot.models.sampling import FORMAT_DEFAULTS
from bot.models.tokenizers import load_tokenizer

log = logging.getLogger(__name__)

_TOKENIZER = ("spiece.model", "tokenizer.json", "vocab.txt", "tokenizer_config.json")
_WEIGHTS = ("*.safetensors", "*.bin")


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


def _check_folder(folder: Path) -> None:
    """Fail with a message naming the file for what transformers reports only vaguely."""
    read_json(folder / "config.json", strict=True)
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


def _local_folder(spec: str) -> Path | None:
    path = Path(spec.strip()).expanduser()
    try:
        return path if path.is_dir() else None
    except OSError:  # a name too long for a path: resolve_folder says so clearly
        return None


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
    entry = find_entry(spec)
    local = _local_folder(spec)
    family = family_of_entry(entry) or (family_of_folder(local) if local else None)
    if family is not None and options.quantization != "none" and family.quantization_refused:
        raise ModelLoadError(family.quantization_refused)  # before anything is downloaded
    quantization = None if family else quantization_config(options.quantization, device, dtype)
    folder = resolve_folder(spec, options.cache_dir, options.hf_token)
    family = family or family_of_folder(folder)  # a hub id the catalogue does not name
    if family is not None:
        return _load_family(spec, family, folder, options, device, dtype)
    _check_folder(folder)
    meta = read_metadata(folder, strict=True)
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
    return LoadedModel(
        name=spec,
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        prompt_format=prompt_format,
        context_length=context_length(detected.context_length, _positions(model)),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        is_demo=bool(meta.get("demo")),
        parameters=sum(p.numel() for p in model.parameters()),
        sampling_defaults=detected.sampling,
        quantization=options.quantization,
        format_reason=detected.reason(japanese=True),
    )


def _positions(model: Any) -> int | None:
    """How many positions the weights have."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _load_family(
    spec: str, family: Family, folder: Path, options: LoadOptions, device: str, dtype: Any
) -> LoadedModel:
    """A family with code of its own (bot/models/families.py), such as GPTSAN."""
    import torch
    from safetensors import SafetensorError

    entry = find_entry(spec)
    try:
        tokenizer = family.load_tokenizer(folder)
        model = family.load(folder, dtype, device)
    except torch.OutOfMemoryError as exc:
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」を読み込むメモリが足りません。DTYPE=fp16/bf16 の GPU を試してください。"
        ) from exc
    except SafetensorError as exc:
        raise damaged_weights(folder, exc) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」を読み込めませんでした: {type(exc).__name__}: {str(exc)[:200]}",
            detail=str(exc),
        ) from exc
    setting = options.prompt_format
    prompt_format = family.prompt_format if setting == "auto" else FORMATS[setting]
    if setting != "auto":
        reason, why = "PROMPT_FORMAT の設定", "PROMPT_FORMAT"
    elif entry is not None:
        reason, why = (
            f"{entry.hub_id}（指定されたモデル名）",
            f"{entry.hub_id} (the model name given)",
        )
    else:
        reason = f"config.json の model_type（{family.model_type}）"
        why = "model_type in config.json"
    log.info("model %s: prompt format %s, from %s", spec, prompt_format.name, why)
    return LoadedModel(
        name=spec,
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        prompt_format=prompt_format,
        context_length=context_length(entry.context_length if entry else None, _positions(model)),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        parameters=sum(p.numel() for p in model.parameters()),
        sampling_defaults=entry.sampling if entry else FORMAT_DEFAULTS[prompt_format.name],
        supports_lora=family.supports_lora,
        format_reason=reason,
    )
