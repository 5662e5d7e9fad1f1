"""`ENGINE=llamacpp`: GGUF models through llama-cpp-python (`engine.py`), and the converter
that makes them from Hugging Face folders (`convert.py`, `python -m bot convert`)."""

from bot.engines.llamacpp.engine import LlamaCppEngine, LlamaCppOptions

__all__ = ["LlamaCppEngine", "LlamaCppOptions"]
