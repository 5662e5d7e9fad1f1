"""Prometheus metrics (prometheus_client), one registry per app. Every name is documented in
docs/OPERATIONS.md; keep the two in step."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bot.engines.contract import GenerationResult, LoadedModel
from bot.errors import GenerationFailed, ModelLoadError, UserFacingError

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 60)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500, 1000)
# The bot's failures, not the user's: counted as errors, not refusals.
BOT_FAILURES = (GenerationFailed, ModelLoadError)


def reason(error: UserFacingError) -> str:
    """A refusal's label: its class in snake case (InvalidMessage -> invalid_message)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def resident_bytes() -> float:
    """This process's resident memory (the model's weights on a CPU live here)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return float("nan")


def gpu_allocated_bytes() -> float:
    torch = sys.modules.get("torch")  # never import torch just to report memory
    if torch is None or not torch.cuda.is_available():
        return 0.0
    return float(torch.cuda.memory_allocated())


class BotMetrics:
    """Implements `bot.chat.ports.ReplyObserver`, and holds the gauges the HTTP port refreshes
    at each scrape."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        by_platform = ["platform"]
        self.messages = Counter(
            "chatbot_messages",
            "Messages received, commands included.",
            by_platform,
            registry=registry,
        )
        self.replies = Counter(
            "chatbot_replies",
            "Generated replies sent, by how generation ended.",
            ["platform", "finish"],
            registry=registry,
        )
        self.refusals = Counter(
            "chatbot_refusals",
            "Messages answered with an explanation instead of a reply (too long, rate limit, "
            "queue full, not permitted, ...).",
            ["platform", "reason"],
            registry=registry,
        )
        self.errors = Counter(
            "chatbot_errors",
            "Messages that failed on the bot's side (generation failed, out "
            "of memory, unexpected errors).",
            by_platform,
            registry=registry,
        )
        self.reply_latency = Histogram(
            "chatbot_reply_latency_seconds",
            "From a message reaching the bot to its finished reply being sent.",
            by_platform,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "chatbot_time_to_first_token_seconds",
            "From a request entering the model's queue to its first generated token.",
            by_platform,
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.reply_speed = Histogram(
            "chatbot_reply_tokens_per_second",
            "Generation speed of each reply (its new tokens / its generation time).",
            by_platform,
            buckets=SPEED_BUCKETS,
            registry=registry,
        )
        self.generated_tokens = Counter(
            "chatbot_generated_tokens",
            "Tokens generated for replies.",
            by_platform,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "chatbot_queue_depth",
            "Generation requests waiting for the model.",
            registry=registry,
        )
        self.tokens_per_second = Gauge(
            "chatbot_tokens_per_second",
            "Tokens generated per second of generation over the last minute (all rows of a "
            "batch together).",
            registry=registry,
        )
        self.model_loaded = Gauge(
            "chatbot_model_loaded", "1 while a model is loaded and serving.", registry=registry
        )
        self.model_info = Gauge(
            "chatbot_model_info",
            "The model being served (value 1).",
            ["model", "device", "dtype", "quantization"],
            registry=registry,
        )
        self.model_load_seconds = Gauge(
            "chatbot_model_load_seconds",
            "How long the current model took to load.",
            registry=registry,
        )
        self.model_load_failures = Counter(
            "chatbot_model_load_failures",
            "Model loads that failed (start-up or /model).",
            registry=registry,
        )
        self.memory = Gauge(
            "chatbot_memory_bytes",
            "Memory in use: kind=process_resident (RAM of this process, the model's weights "
            "on a CPU) and kind=gpu_allocated (tensors on the GPU).",
            ["kind"],
            registry=registry,
        )
        self.memory.labels("process_resident").set_function(resident_bytes)
        self.memory.labels("gpu_allocated").set_function(gpu_allocated_bytes)
        self.platform_connected = Gauge(
            "chatbot_platform_connected",
            "1 while connected to the platform.",
            by_platform,
            registry=registry,
        )
        self.database_up = Gauge(
            "chatbot_database_up",
            "1 when the database answered at the last check.",
            registry=registry,
        )

    # ReplyObserver

    def received(self, platform: str) -> None:
        self.messages.labels(platform).inc()

    def refused(self, platform: str, error: UserFacingError) -> None:
        if isinstance(error, BOT_FAILURES):
            self.errors.labels(platform).inc()
        else:
            self.refusals.labels(platform, reason(error)).inc()

    def failed(self, platform: str) -> None:
        self.errors.labels(platform).inc()

    def replied(self, platform: str, result: GenerationResult, latency_s: float) -> None:
        self.replies.labels(platform, result.finish_reason).inc()
        self.reply_latency.labels(platform).observe(latency_s)
        if result.new_tokens:
            self.first_token.labels(platform).observe(result.queue_wait_s + result.prompt_s)
            self.generated_tokens.labels(platform).inc(result.new_tokens)
        if result.generation_s > 0:
            self.reply_speed.labels(platform).observe(result.new_tokens / result.generation_s)

    # Model loads

    def timed_loader(self, loader: Callable[[str], LoadedModel]) -> Callable[[str], LoadedModel]:
        """`loader`, recording each load's time and the model it loaded."""

        def load(spec: str) -> LoadedModel:
            started = time.monotonic()
            try:
                model = loader(spec)
            except Exception:
                self.model_load_failures.inc()
                raise
            self.model_load_seconds.set(time.monotonic() - started)
            self.model_info.clear()
            unknown = "unknown"  # an engine that does not know (a server): said so, not faked
            self.model_info.labels(
                model.name, model.device or unknown, model.dtype or unknown, model.quantization
            ).set(1)
            return model

        return load
