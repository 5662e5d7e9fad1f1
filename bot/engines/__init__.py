"""Engines: what generates the tokens. The one package to read to see how a reply is made.

The model worker (`bot.serving.worker`) owns scheduling: the queue, batching rows that arrive
together, cancellation. What it hands an engine is a list of `Row`s of token ids that the bot
built with its own tokenizer (`contract.py`); what it gets back is, per row, a result or the
error that row alone is answered with. So every engine is fed exactly the prompt the rinna/LINE
sentencepiece parity work produces, whatever tokenizer the engine itself ships.

- `transformers/`: in-process `generate`, every family, LoRA personas per row, the demo model.
- `llamacpp/`: GGUF files through llama-cpp-python, quantized on CPUs and small GPUs;
  `python -m bot convert` makes the files.
- `openai/`: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, LM Studio) over
  `/v1/completions`.

Engines that speak token ids (llama.cpp, servers) derive from `token_engine.TokenEngine` and
share its text side; `factory.py` builds the one `ENGINE` names. The engine packages never
import each other.
"""

from bot.engines.contract import (
    Engine,
    EngineInfo,
    GenerationResult,
    LoadedModel,
    LoadOptions,
    PreparedPrompt,
    Row,
    RowOutcome,
)

__all__ = [
    "Engine",
    "EngineInfo",
    "GenerationResult",
    "LoadOptions",
    "LoadedModel",
    "PreparedPrompt",
    "Row",
    "RowOutcome",
]
