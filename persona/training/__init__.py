"""Train a persona's LoRA adapter on dialogue pairs, and write a persona file that uses it.

The recipe follows the public rinna 3.6B LoRA recipes (see docs/PERSONAS.md): r=8, alpha 16,
dropout 0.05 on `query_key_value`, cutoff 256 tokens, 3 epochs, lr 3e-4, base in 8-bit or 4-bit
through bitsandbytes on a GPU when asked. The loop is plain torch: the loss counts only the reply
tokens, held-out loss is measured before, during and after training, and the adapter is saved
every `save_every` steps and at the end.

Prompts are rendered with the bot's own prompt formats (`bot.models.prompt_formats`), including its
`neutralise`, so the adapter sees in training exactly the text it will see when serving.

Data: JSON lines, either the shape `persona.nucc` writes
    {"context": [{"speaker": "F107", "text": "…"}, …], "reply": {"speaker": "F023", "text": "…"}}
(context turns by the reply's speaker become the bot's turns, all others user turns, named by
speaker when there are several) or a single exchange {"input": "…", "output": "…"}.

Output (`--output-dir`, default `data/personas/NAME`):
    adapter/                 the final peft adapter (loads with `PeftModel.from_pretrained`)
    checkpoints/step-NNNNNN/ intermediate adapters (the newest `keep_checkpoints` are kept)
    training.json            settings, data statistics and the loss history
and the persona file `PERSONA_DIR/NAME.toml` (default `data/personas/NAME.toml`) whose
`adapter` key is a path relative to the persona file's folder, or absolute when the adapter
lies outside it.

The parts: `config` (TrainConfig, the checks before loading), `data` (pairs to batches),
`adapter` (base model and LoRA), `schedule` (steps and learning rate), `loop` (`train`),
`checkpoints` (adapters and the persona file, saved whole or not at all), `result` (what a run
produced, and training.json). Callers import from here.
"""

from persona.training.adapter import (
    TARGET_MODULES,
    add_lora,
    default_target_modules,
    load_base,
    serving_template,
)
from persona.training.checkpoints import PERSONA_SAMPLING, write_persona_file
from persona.training.config import (
    QUANTIZE,
    TEMPLATES,
    TrainConfig,
    TrainingError,
    check_quantize,
    validate,
)
from persona.training.data import (
    IGNORE,
    DataStats,
    EncodedExample,
    Example,
    collate,
    encode_example,
    load_pairs,
    render_prompt,
    render_reply,
    split_examples,
)
from persona.training.loop import Progress, evaluate, token_loss, train
from persona.training.result import TrainResult

__all__ = [
    "IGNORE",
    "PERSONA_SAMPLING",
    "QUANTIZE",
    "TARGET_MODULES",
    "TEMPLATES",
    "DataStats",
    "EncodedExample",
    "Example",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "add_lora",
    "check_quantize",
    "collate",
    "default_target_modules",
    "encode_example",
    "evaluate",
    "load_base",
    "load_pairs",
    "render_prompt",
    "render_reply",
    "serving_template",
    "split_examples",
    "token_loss",
    "train",
    "validate",
    "write_persona_file",
]
