"""GPTSAN as a model family the transformers engine loads (see bot/models/families.py)."""

from __future__ import annotations

from bot.models.families import Family
from bot.models.gptsan.config import ARCHITECTURE, MODEL_TYPE
from bot.models.gptsan.loading import load_gptsan, load_tokenizer
from bot.models.prompt_formats import GPTSAN

QUANTIZATION_REFUSED = (
    "GPTSAN（Switch Transformer）は 8-bit/4-bit 量子化に対応していません。"
    "QUANTIZATION=none にしてください（GPU の fp16/bf16 なら約 6.3 GB で動きます）。"
)

FAMILY = Family(
    model_type=MODEL_TYPE,
    architecture=ARCHITECTURE,
    load=load_gptsan,
    load_tokenizer=load_tokenizer,
    prompt_format=GPTSAN,
    quantization_refused=QUANTIZATION_REFUSED,
    supports_lora=False,  # peft cannot adapt its Switch layers
)
