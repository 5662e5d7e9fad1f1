"""GPTSAN as a `LoadedModel` for the worker: the model loader hands GPTSAN folders here."""

from __future__ import annotations

import logging
from typing import Any

from bot.errors import ModelLoadError, shorten
from bot.model_loader import LoadedModel, LoadOptions, damaged_weights, resolve_folder
from bot.prompt_format import FORMATS, GPTSAN
from bot.registry import find_entry
from bot.sampling import FORMAT_DEFAULTS

log = logging.getLogger(__name__)

QUANTIZATION_REFUSED = (
    "GPTSAN（Switch Transformer）は 8-bit/4-bit 量子化に対応していません。"
    "QUANTIZATION=none にしてください（GPU の fp16/bf16 なら約 6.3 GB で動きます）。"
)


def load_gptsan_model(spec: str, options: LoadOptions, device: str, dtype: Any) -> LoadedModel:
    import torch
    from safetensors import SafetensorError

    from bot.models.gptsan.loading import load_gptsan, load_tokenizer

    if options.quantization != "none":
        raise ModelLoadError(QUANTIZATION_REFUSED)
    folder = resolve_folder(spec, options)
    entry = find_entry(spec)
    try:
        tokenizer = load_tokenizer(folder)
        model = load_gptsan(folder, dtype, device)
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
    name = options.prompt_format
    prompt_format = GPTSAN if name == "auto" else FORMATS[name]
    if name != "auto":
        reason, why = "PROMPT_FORMAT の設定", "PROMPT_FORMAT"
    elif entry is not None:
        reason, why = (
            f"{entry.hub_id}（指定されたモデル名）",
            f"{entry.hub_id} (the model name given)",
        )
    else:
        reason, why = "config.json の model_type（gptsan-japanese）", "model_type in config.json"
    log.info("model %s: prompt format %s, from %s", spec, prompt_format.name, why)
    context = entry.context_length if entry else model.config.max_position_embeddings
    return LoadedModel(
        name=spec,
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        prompt_format=prompt_format,
        context_length=int(context),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        is_demo=False,
        parameters=sum(p.numel() for p in model.parameters()),
        sampling_defaults=entry.sampling if entry else FORMAT_DEFAULTS[prompt_format.name],
        supports_lora=False,
        format_reason=reason,
    )
