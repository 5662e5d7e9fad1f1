"""`python -m bot bench`: many channels at once through the real conversation manager.

Builds (once, into MODEL_CACHE_DIR) a ~100M-parameter randomly initialised GPTNeoX with the demo
tokenizer and a 32k vocabulary like rinna's, then for 1, 4, 8 and 16 channels sending at once
measures aggregate tokens/s and p50/p95 reply latency, batched and one at a time; the bot's
overhead against bare `model.generate` for the same tokens; and the event loop's worst lag.
A benchmark, not a test: the figures depend on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.app.bootstrap import bootstrap
from bot.app.settings import Settings
from bot.engines.contract import LoadedModel
from bot.messages import ConversationKey, IncomingMessage, NullSink
from bot.models.demo import ensure_demo_model
from bot.models.files import METADATA_FILE
from bot.models.prompt_formats import Turn

MESSAGE = "最近のおすすめの本を教えてください。週末にゆっくり読みたいです。"


@dataclass(frozen=True)
class BenchShape:
    """The benchmark model's shape; the default is ~106M parameters with rinna's vocabulary."""

    layers: int = 8
    hidden: int = 768
    heads: int = 12
    vocab: int = 32000

    @property
    def name(self) -> str:
        return f"bench-gptneox-{self.layers}x{self.hidden}-v{self.vocab}"

    @property
    def parameters_m(self) -> float:
        layer = 12 * self.hidden * self.hidden + 13 * self.hidden
        return (self.layers * layer + 2 * self.vocab * self.hidden) / 1e6

    def describe(self) -> str:
        return (
            f"GPTNeoX {self.layers} x {self.hidden}, vocab {self.vocab:,} "
            f"(~{self.parameters_m:.0f}M parameters)"
        )


FULL = BenchShape()
# The "~1B GPTNeoX": 0.94B parameters, head size 128 like rinna 3.6B's.
ONE_B = BenchShape(layers=16, hidden=2048, heads=16, vocab=32000)
SHAPES = {"106m": FULL, "1b": ONE_B}


def ensure_bench_model(cache_dir: Path, shape: BenchShape = FULL) -> Path:
    """A GPTNeoX of `shape` with random weights and the demo tokenizer, built once."""
    target = Path(cache_dir) / shape.name
    if (target / METADATA_FILE).exists():
        return target  # without importing torch: an engine's benchmark process may not need it
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.utils import logging as hf_logging

    demo = ensure_demo_model(cache_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".bench-build-", dir=cache_dir))
    try:
        config = GPTNeoXConfig(
            vocab_size=shape.vocab,
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            intermediate_size=4 * shape.hidden,
            max_position_embeddings=2048,
            rotary_pct=0.25,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=False,
        )
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(config)
        hf_logging.disable_progress_bar()
        model.save_pretrained(scratch)
        hf_logging.enable_progress_bar()
        shutil.copy(demo / "spiece.model", scratch / "spiece.model")
        (scratch / METADATA_FILE).write_text(
            json.dumps({"prompt_format": "rinna", "demo": True, "context_length": 2048}),
            encoding="utf-8",
        )
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@dataclass
class Run:
    channels: int
    batched: bool
    tokens: int
    wall_s: float
    latencies_s: list[float]
    lags_ms: list[float]
    batches: list[int]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def latency(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _lag_monitor(stop: asyncio.Event, lags: list[float], tick: float = 0.005) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(tick)
        lags.append((time.perf_counter() - started - tick) * 1000)


def bench_settings(model: str, cache: Path, workdir: Path, batch: int, new_tokens: int,
                   **extra: Any) -> Settings:  # fmt: skip
    """The benchmarks' settings: CPU fp32, greedy, no repetition penalty, no rate limit, a
    database of their own in `workdir`; `extra` for the engine benchmark's engine fields."""
    return Settings(
        _env_file=None,
        model=model,
        database_url=f"sqlite:///{workdir / 'bench.sqlite3'}",
        model_cache_dir=cache,
        device="cpu",
        dtype="fp32",
        max_batch_size=batch,
        max_queue=1000,
        user_rate_limit_per_minute=0,
        temperature=0,
        repetition_penalty=1.0,
        max_new_tokens=new_tokens,
        log_level="WARNING",
        **extra,
    )


async def _run(model: Path, channels: int, batched: bool, new_tokens: int) -> Run:
    with tempfile.TemporaryDirectory() as workdir:
        app = bootstrap(
            bench_settings(
                str(model), model.parent, Path(workdir), channels if batched else 1, new_tokens
            )
        )
        await app.start()
        try:
            warm = IncomingMessage(ConversationKey("bench", "w", "warm-up"), "u", "u", MESSAGE)
            await app.manager.handle(warm, NullSink())
            latencies: list[float] = []

            async def one(i: int) -> None:
                started = time.perf_counter()
                message = IncomingMessage(
                    ConversationKey("bench", "w", f"c{i}"), f"u{i}", f"user{i}", MESSAGE
                )
                await app.manager.handle(message, NullSink())
                latencies.append(time.perf_counter() - started)

            lags: list[float] = []
            stop = asyncio.Event()
            monitor = asyncio.create_task(_lag_monitor(stop, lags))
            before = app.worker.tokens_generated
            app.worker.batch_sizes.clear()
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(channels)))
            wall = time.perf_counter() - started
            stop.set()
            await monitor
            tokens = app.worker.tokens_generated - before
        finally:
            await app.close()
    return Run(channels, batched, tokens, wall, latencies, lags, list(app.worker.batch_sizes))


async def _overhead(
    model_dir: Path, new_tokens: int, counts: tuple[int, ...], repeats: int = 5
) -> tuple[float, float, dict[int, float]]:
    """Median seconds for one reply through the bot vs bare `generate` of the same tokens.

    Both run on the worker thread with the same loaded model, interleaved, so machine noise
    (this is a shared 2-core VM) hits both alike."""
    import torch

    bot_times, bare_times = [], []
    with tempfile.TemporaryDirectory() as workdir:
        app = bootstrap(
            bench_settings(str(model_dir), model_dir.parent, Path(workdir), 1, new_tokens)
        )
        loaded = await app.start()
        prompt = loaded.prompt_format.render([Turn("user", MESSAGE, "u")])
        ids = torch.tensor([loaded.tokenizer.encode(prompt)])

        def bare(tokens: int, rows: int = 1) -> float:
            return bare_generate(loaded, ids, tokens, rows)

        try:
            for i in range(repeats + 1):
                message = IncomingMessage(ConversationKey("bench", "w", f"o{i}"), "u", "u", MESSAGE)
                before = app.worker.tokens_generated
                started = time.perf_counter()
                await app.manager.handle(message, NullSink())
                took = time.perf_counter() - started
                tokens = app.worker.tokens_generated - before
                bare_took = await app.worker.call(lambda tokens=tokens: bare(tokens))
                if i:  # the first round is a warm-up
                    bot_times.append(took)
                    bare_times.append(bare_took)
            # What the hardware gives for the same batch sizes, without the bot: the ceiling.
            scaling = {}
            for rows in counts:
                took = await app.worker.call(lambda rows=rows: bare(new_tokens, rows))
                scaling[rows] = rows * new_tokens / took
        finally:
            await app.close()
    return statistics.median(bot_times), statistics.median(bare_times), scaling


def bare_generate(loaded: LoadedModel, ids: Any, tokens: int, rows: int = 1) -> float:
    """Seconds for bare `generate` of exactly `tokens` new tokens for `rows` copies of `ids`."""
    import torch

    batch = ids.repeat(rows, 1)
    started = time.perf_counter()
    with torch.inference_mode():
        loaded.model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            do_sample=False,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            pad_token_id=0,
            eos_token_id=loaded.tokenizer.eos_id,
            use_cache=True,  # as the bot generates, whatever the checkpoint's config says
        )
    return time.perf_counter() - started


def _machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


async def run_benchmark(
    cache_dir: Path,
    channels: tuple[int, ...] = (1, 4, 8, 16),
    new_tokens: int = 64,
    shape: BenchShape = FULL,
) -> str:
    import logging

    logging.getLogger("bot.replies").setLevel(logging.WARNING)  # one line per reply is noise here
    model = ensure_bench_model(cache_dir, shape)
    runs: dict[tuple[int, bool], Run] = {}
    for count in channels:
        for batched in (True, False):
            if count == 1 and not batched:
                runs[(1, False)] = runs[(1, True)]
                continue
            runs[(count, batched)] = await _run(model, count, batched, new_tokens)
    bot_s, bare_s, scaling = await _overhead(model, new_tokens, channels)
    return _report(runs, channels, bot_s, bare_s, new_tokens, scaling, shape)


def _report(
    runs: dict[tuple[int, bool], Run],
    channels: tuple[int, ...],
    bot_s: float,
    bare_s: float,
    new_tokens: int,
    scaling: dict[int, float],
    shape: BenchShape,
) -> str:
    lines = [
        f"Machine: {_machine()}",
        f"Model: {shape.describe()}, random weights, "
        f"CPU fp32; greedy, up to {new_tokens} new tokens per reply, one message per channel.",
        "",
        "| channels | batched tok/s | batches | p50 / p95 latency (s) | one-at-a-time tok/s | "
        "p50 / p95 latency (s) | speed-up | loop lag p99 / max (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in channels:
        b, s = runs[(count, True)], runs[(count, False)]
        lags = b.lags_ms + s.lags_ms
        lines.append(
            f"| {count} | {b.tokens_per_s:.1f} | {'+'.join(map(str, b.batches))} | "
            f"{b.latency(0.5):.2f} / {b.latency(0.95):.2f} | "
            f"{s.tokens_per_s:.1f} | {s.latency(0.5):.2f} / {s.latency(0.95):.2f} | "
            f"{b.tokens_per_s / s.tokens_per_s:.2f}x | "
            f"{_percentile(lags, 0.99):.1f} / {max(lags or [0]):.1f} |"
        )
    base = scaling[min(scaling)]
    lines += [
        "",
        "Bare `model.generate` on the same machine, same prompt repeated, no bot (the ceiling):",
        "",
        "| batch | " + " | ".join(str(n) for n in scaling) + " |",
        "|---|" + "---:|" * len(scaling),
        "| tok/s | " + " | ".join(f"{v:.1f}" for v in scaling.values()) + " |",
        "| vs batch 1 | " + " | ".join(f"{v / base:.2f}x" for v in scaling.values()) + " |",
    ]
    overhead = (bot_s - bare_s) / bare_s * 100
    lines += [
        "",
        f"Overhead for one reply: bot {bot_s * 1000:.0f} ms vs bare `model.generate` "
        f"{bare_s * 1000:.0f} ms for the same tokens: {overhead:+.1f} %.",
    ]
    return "\n".join(lines)
