"""`ENGINE=openai`: any OpenAI-compatible server; see `engine.py`."""

from bot.engines.openai.engine import OpenAIEngine, OpenAIOptions

__all__ = ["OpenAIEngine", "OpenAIOptions"]
