"""GPTSAN-japanese's `config.json`, as the hub checkpoints write it (transformers 4.x's
`GPTSanJapaneseConfig`, `model_type: gptsan-japanese`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedConfig

MODEL_TYPE = "gptsan-japanese"
ARCHITECTURE = "GPTSanJapaneseForConditionalGeneration"


class GPTSanConfig(PreTrainedConfig):
    """Defaults are Tanrei/GPTSAN-japanese's (2.8B: 10 switch layers of 16 experts)."""

    model_type = MODEL_TYPE
    # generate() sizes its cache from num_hidden_layers.
    attribute_map: ClassVar[dict[str, str]] = {
        "num_hidden_layers": "num_layers",
        "hidden_size": "d_model",
    }

    vocab_size: int = 36000
    max_position_embeddings: int = 1280
    d_model: int = 1024
    d_ff: int = 8192
    d_ext: int = 4096
    d_spout: int = 128
    num_switch_layers: int = 10
    num_ext_layers: int = 0
    num_heads: int = 16
    num_experts: int = 16
    expert_capacity: int = 128
    layer_norm_epsilon: float = 1e-5
    router_bias: bool = False
    use_cache: bool = True
    separator_token_id: int = 35998
    pad_token_id: int | None = 35995
    eos_token_id: int | None = 35999
    bos_token_id: int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("num_layers", None)  # derived, never read from the file
        super().__post_init__(**kwargs)

    @property
    def num_layers(self) -> int:
        return self.num_switch_layers + self.num_ext_layers


def read_config(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def is_gptsan_config(values: Any) -> bool:
    if not isinstance(values, dict):  # a damaged config.json: the general loader says so
        return False
    return values.get("model_type") == MODEL_TYPE or ARCHITECTURE in (
        values.get("architectures") or []
    )


def config_from_dict(values: dict[str, Any]) -> GPTSanConfig:
    known = {
        "vocab_size", "max_position_embeddings", "d_model", "d_ff", "d_ext", "d_spout",
        "num_switch_layers", "num_ext_layers", "num_heads", "num_experts", "expert_capacity",
        "layer_norm_epsilon", "router_bias", "separator_token_id", "pad_token_id",
        "eos_token_id", "bos_token_id",
    }  # fmt: skip
    return GPTSanConfig(**{k: v for k, v in values.items() if k in known})
