"""The base model loaded as the bot serves it, and the LoRA adapter put on it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.models.prompt_formats import PromptFormat
from bot.models.tokenizers import Tokenizer
from persona.training.config import TEMPLATES, TrainConfig, TrainingError

# LoRA targets per model type: the attention projections the public recipes adapt.
TARGET_MODULES: dict[str, list[str]] = {
    "gpt_neox": ["query_key_value"],
    "gpt_neox_japanese": ["query_key_value"],
    "gpt2": ["c_attn"],
    "gpt_neo": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
}


@dataclass
class _Base:
    model: Any
    tokenizer: Tokenizer
    has_nl: bool
    folder: Path
    prompt_format: PromptFormat  # what the bot serves this model with (same loader, same detection)


def serving_template(fmt: PromptFormat) -> str:
    """The template that trains on exactly the text the bot sends a model served in `fmt`: the
    format itself, or for a base model (plain) the chat format with the same newlines, whose
    transcript is the same text."""
    if fmt.name in TEMPLATES:
        return fmt.name
    return "rinna" if fmt.newline == "<NL>" else "line"


def load_base(config: TrainConfig) -> _Base:
    """The base model through the bot's own loader (demo, folders and hub ids alike), 8-bit or
    4-bit on the GPU when asked (`check_quantize` has already refused what cannot work)."""
    from bot.engines.transformers.loader import load_model

    loaded = load_model(config.base, replace(config.load, quantization=config.quantize))
    if not loaded.supports_lora:
        raise TrainingError(
            f"{config.base} cannot take a LoRA adapter (GPTSAN runs on the bot's own code, "
            "which peft cannot adapt); choose another --base"
        )
    model = loaded.model
    if config.quantize != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return _Base(
        model,
        loaded.tokenizer,
        loaded.tokenizer.has_piece("<NL>"),
        loaded.folder,
        loaded.prompt_format,
    )


def default_target_modules(model: Any) -> list[str]:
    model_type = getattr(model.config, "model_type", "")
    if model_type in TARGET_MODULES:
        return TARGET_MODULES[model_type]
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    if model_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[model_type])
    raise TrainingError(
        f"no default LoRA targets for model type {model_type!r}; name them with --target-modules"
    )


def add_lora(model: Any, config: TrainConfig) -> tuple[Any, list[str]]:
    """`model` wrapped with a fresh LoRA adapter as `config` asks, and the modules it adapts.
    The adapter records the base as the user named it, so it loads again from there."""
    from peft import LoraConfig, get_peft_model

    targets = config.target_modules or default_target_modules(model)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # transformers' deprecation notice, raised inside peft
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
            peft_model = get_peft_model(model, lora)
    except ValueError as exc:  # e.g. a target module the model does not have
        raise TrainingError(f"cannot add LoRA to {targets}: {exc}") from exc
    peft_model.peft_config["default"].base_model_name_or_path = _base_reference(config.base)
    return peft_model, targets


def _base_reference(spec: str) -> str:
    """What the adapter records as its base: the name the user gave, a folder made absolute."""
    from bot.models.demo import DEMO_NAME

    spec = spec.strip()
    path = Path(spec).expanduser()
    return str(path.resolve()) if spec != DEMO_NAME and path.exists() else spec
