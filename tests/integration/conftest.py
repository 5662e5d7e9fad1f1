"""The real-engine fixtures (tests/engine_support.py) for this folder's tests."""

from tests.engine_support import engine_cache, gguf_model, served_demo, vllm

__all__ = ["engine_cache", "gguf_model", "served_demo", "vllm"]
