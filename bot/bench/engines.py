"""`python -m bot bench --engine transformers,llamacpp[,openai]`: the same model shape through
each engine, in one run.

Per engine, in a process of its own (so peak memory is that engine's): prefill time for a
~512-token history, single-stream decode tok/s, aggregate tok/s and p95 reply latency with
1/4/8 channels sending at once, peak resident memory, and the engine's own bare speed without
the bot (transformers: `model.generate`; llama.cpp: its multi-sequence decode loop with no
conversation, database or text around it; openai: a bare streamed request). A benchmark, not a
test: the figures depend on the machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.app.bootstrap import bootstrap
from bot.bench.channels import (
    FULL,
    MESSAGE,
    BenchShape,
    _machine,
    bare_generate,
    bench_settings,
    ensure_bench_model,
)
from bot.messages import ConversationKey, IncomingMessage, NullSink
from bot.models.prompt_formats import Turn

_REPLY_LINE = re.compile(r"prompt_tokens=(\d+) .* prompt_ms=(\d+) generation_ms=(\d+)")


@dataclass
class EngineResult:
    engine: str
    detail: str
    # One stream (MAX_BATCH_SIZE=1), in a process of its own:
    prefill_ms: float = 0.0  # first token of a reply to a ~512-token prompt
    prompt_tokens: int = 0
    decode_tok_s: float = 0.0  # after the first token, through the bot (median)
    single_tok_s: float = 0.0  # a whole reply through the bot, wall clock (median)
    single_bare_tok_s: float = 0.0  # the same number of tokens, the engine alone (median)
    single_peak_rss_gb: float = 0.0
    single_before_load_gb: float = 0.0  # resident before the model loads: Python, torch, the bot
    # Channels sending at once (MAX_BATCH_SIZE = the most channels), another process:
    channels: dict[int, tuple[float, float]] = field(default_factory=dict)  # tok/s, p95 s
    bare_channels: dict[int, float] = field(default_factory=dict)  # the engine alone, tok/s
    peak_rss_gb: float = 0.0
    before_load_gb: float = 0.0


CHANNEL_FIELDS = ("channels", "bare_channels", "peak_rss_gb", "before_load_gb")


class _ReplyTimes(logging.Handler):
    """Reads prompt_ms/generation_ms from the bot's one-line reply log."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _long_message(tokenizer: Any, target: int) -> str:
    """A message of about `target` tokens (the ~512-token history of the prefill figure)."""
    text = MESSAGE
    while len(tokenizer.encode(text)) < target:
        text += MESSAGE
    return text


def _key(name: str) -> ConversationKey:
    return ConversationKey("bench", "w", name)


async def _bench_single(app: Any, loaded: Any, ids: list[int], result: EngineResult,
                        handler: _ReplyTimes, repeats: int) -> None:  # fmt: skip
    """Prefill of a ~512-token prompt, then one reply at a time through the bot, each followed
    by the engine alone making as many tokens from the same prompt: interleaved, so noise on
    this shared machine hits both alike; medians."""
    long = _long_message(loaded.tokenizer, 480)
    handler.lines.clear()
    await app.manager.handle(IncomingMessage(_key("prefill"), "u", "u", long), NullSink())
    match = _REPLY_LINE.search(handler.lines[-1])
    if match:
        result.prompt_tokens, result.prefill_ms = int(match.group(1)), float(match.group(2))
    bot, bare, decode = [], [], []
    for i in range(repeats):
        before = app.worker.tokens_generated
        handler.lines.clear()
        started = time.perf_counter()
        await app.manager.handle(IncomingMessage(_key(f"s{i}"), "u", "u", MESSAGE), NullSink())
        took = time.perf_counter() - started
        made = app.worker.tokens_generated - before
        bot.append(made / took)
        line = _REPLY_LINE.search(handler.lines[-1])
        if line and int(line.group(3)):
            decode.append((made - 1) / (int(line.group(3)) / 1000))
        seconds, tokens = await app.worker.call(
            lambda made=made: _bare(app.worker.engine, loaded, ids, made, 1)
        )
        bare.append(tokens / seconds)
    result.single_tok_s = statistics.median(bot)
    result.single_bare_tok_s = statistics.median(bare)
    result.decode_tok_s = statistics.median(decode) if decode else 0.0


async def _bench_channels(app: Any, loaded: Any, ids: list[int], result: EngineResult,
                          counts: tuple[int, ...], tokens: int) -> None:  # fmt: skip
    """`count` channels sending at once: aggregate tok/s and p95 latency, then the engine
    alone with as many rows."""
    for count in counts:
        latencies: list[float] = []

        async def one(i: int, count: int = count, latencies: list[float] = latencies) -> None:
            started = time.perf_counter()
            message = IncomingMessage(_key(f"c{count}-{i}"), f"u{i}", "u", MESSAGE)
            await app.manager.handle(message, NullSink())
            latencies.append(time.perf_counter() - started)

        before = app.worker.tokens_generated
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - started
        made = app.worker.tokens_generated - before
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        result.channels[count] = (made / wall, p95)
    for count in counts:
        seconds, made = await app.worker.call(
            lambda count=count: _bare(app.worker.engine, loaded, ids, tokens, count)
        )
        result.bare_channels[count] = made / seconds


async def _bench_engine(engine: str, model: str, cache: Path, mode: str, counts: tuple[int, ...],
                        tokens: int, base_url: str, repeats: int = 5) -> EngineResult:  # fmt: skip
    """`mode` "single": one stream with MAX_BATCH_SIZE=1; "channels": `counts` at once."""
    handler = _ReplyTimes()
    replies = logging.getLogger("bot.replies")
    replies.addHandler(handler)
    replies.setLevel(logging.INFO)
    replies.propagate = False
    batch = 1 if mode == "single" else max(counts)
    with tempfile.TemporaryDirectory() as workdir:
        settings = bench_settings(
            model,
            cache,
            Path(workdir),
            batch,
            tokens,
            engine=engine,
            openai_base_url=base_url,
            generation_timeout_s=3600,
        )
        app = bootstrap(settings)
        before_load = _resident_gb()
        loaded = await app.start()
        try:
            result = EngineResult(engine, loaded.dtype)
            await app.manager.handle(IncomingMessage(_key("warm"), "u", "u", MESSAGE), NullSink())
            # The prompt of a fresh channel's one message: what the engine alone is given.
            prompt = loaded.prompt_format.render([Turn("user", MESSAGE, "u")])
            ids = loaded.tokenizer.encode(prompt)
            if mode == "single":
                await _bench_single(app, loaded, ids, result, handler, repeats)
            else:
                await _bench_channels(app, loaded, ids, result, counts, tokens)
        finally:
            await app.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if mode == "single":
        result.single_peak_rss_gb, result.single_before_load_gb = peak, before_load
    else:
        result.peak_rss_gb, result.before_load_gb = peak, before_load
    return result


def _resident_gb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**30


def _bare(engine: Any, loaded: Any, ids: list[int], tokens: int, rows: int) -> tuple[float, int]:
    """The engine alone making up to `tokens` new tokens for each of `rows` copies of `ids`,
    no stop tokens: (seconds, tokens made). A server may still end a row at end-of-text."""
    if engine.name == "transformers":
        import torch

        return bare_generate(loaded, torch.tensor([ids]), tokens, rows), tokens * rows
    from bot.engines.token_engine import RowRequest
    from bot.models.sampling import SamplingParams

    class Count:
        def __init__(self) -> None:
            self.made = 0

        def token(self, row: int, token_id: int) -> bool:
            self.made += 1
            return True

        def text(self, row: int, text: str) -> bool:
            return True

        def done(self, row: int) -> bool:
            return False

    params = SamplingParams(max_new_tokens=tokens, temperature=0, repetition_penalty=1.0)
    # No stop ids: every row makes exactly `tokens` tokens.
    requests = [RowRequest(list(ids), params) for _ in range(rows)]
    count = Count()
    started = time.perf_counter()
    engine.generate_ids(loaded, requests, count)
    return time.perf_counter() - started, count.made


def prepare(engine: str, cache: Path, shape: BenchShape, quant: str) -> str:
    """Builds the model folder (and for llamacpp its GGUF) once; returns the folder."""
    model = ensure_bench_model(cache, shape)
    if engine == "llamacpp":
        from bot.engines.contract import LoadOptions
        from bot.engines.llamacpp.convert import convert, gguf_path

        if not gguf_path(cache, str(model), quant).exists():
            convert(str(model), quant, LoadOptions(cache_dir=cache))
    return str(model)


def _shape_arg(shape: BenchShape) -> str:
    return f"{shape.layers},{shape.hidden},{shape.heads},{shape.vocab}"


def _parse_shape(arg: str) -> BenchShape:
    return BenchShape(*map(int, arg.split(",")))


def run_one(args: list[str]) -> int:
    """The child process: `prepare ENGINE CACHE QUANT SHAPE` builds what ENGINE needs;
    `ENGINE MODE CACHE COUNTS TOKENS URL OUT SHAPE` measures it. Each runs in a process of its
    own, so building and converting the model never count in an engine's memory, and the
    single-stream figures are those of MAX_BATCH_SIZE=1."""
    if args[0] == "prepare":
        engine, cache, quant, shape_arg = args[1:]
        prepare(engine, Path(cache), _parse_shape(shape_arg), quant)
        return 0
    engine, mode, cache, counts, tokens, url, out, shape_arg = args
    model = str(ensure_bench_model(Path(cache), _parse_shape(shape_arg)))
    if engine == "openai":
        model = url.split("|", 1)[1] if "|" in url else model
        url = url.split("|", 1)[0]
    parsed = tuple(int(c) for c in counts.split(","))
    result = asyncio.run(_bench_engine(engine, model, Path(cache), mode, parsed, int(tokens), url))
    Path(out).write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


def run_engine_benchmark(
    cache: Path,
    engines: list[str],
    counts: tuple[int, ...] = (1, 4, 8),
    tokens: int = 64,
    quant: str = "q4_k_m",
    openai_url: str = "",
    shape: BenchShape = FULL,
) -> str:
    """Each engine, and each of its two runs, in a child process; returns the tables."""
    child = [sys.executable, "-m", "bot.bench.engines"]
    for engine in engines:
        subprocess.run(
            [*child, "prepare", engine, str(cache), quant, _shape_arg(shape)], check=True
        )

    def measure(engine: str, mode: str) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            counted = ",".join(map(str, counts))
            args = [engine, mode, str(cache), counted, str(tokens), openai_url, out.name]
            subprocess.run([*child, *args, _shape_arg(shape)], check=True)
            return dict(json.loads(Path(out.name).read_text(encoding="utf-8")))

    results = []
    for engine in engines:
        single, channels = measure(engine, "single"), measure(engine, "channels")
        results.append({**single, **{name: channels[name] for name in CHANNEL_FIELDS}})
    return report(results, counts, tokens, shape)


def _gap(bot: float, bare: float) -> str:
    return f"{100 * (bot - bare) / bare:+.0f} %" if bare else "-"


def report(results: list[dict[str, Any]], counts: tuple[int, ...], tokens: int,
           shape: BenchShape) -> str:  # fmt: skip
    lines = [
        f"Machine: {_machine()}",
        f"Model: {shape.describe()}, random weights; greedy, up to {tokens} new tokens a reply.",
        "",
        "One stream (MAX_BATCH_SIZE=1); a reply through the bot against the engine alone making "
        "as many tokens from the same prompt, interleaved, median of 5:",
        "",
        "| engine | prefill ms (prompt tokens) | decode tok/s after the first token | reply tok/s: "
        "bot / bare (gap) | peak RSS GB (before load) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['engine']} ({r['detail']}) | {r['prefill_ms']:.0f} ({r['prompt_tokens']}) | "
            f"{r['decode_tok_s']:.1f} | {r['single_tok_s']:.1f} / {r['single_bare_tok_s']:.1f} "
            f"({_gap(r['single_tok_s'], r['single_bare_tok_s'])}) | "
            f"{r['single_peak_rss_gb']:.2f} ({r['single_before_load_gb']:.2f}) |"
        )
    head = " | ".join(f"{c} ch tok/s (bare) / p95 s" for c in counts)
    lines += [
        "",
        f"Channels sending at once (MAX_BATCH_SIZE={max(counts)}), aggregate tok/s through the "
        "bot (the engine alone with as many rows) and p95 reply latency:",
        "",
        f"| engine | {head} | peak RSS GB (before load) |",
        "|---|" + "---:|" * len(counts) + "---:|",
    ]
    for r in results:
        cells = []
        for c in counts:
            tok_s, p95 = r["channels"][str(c)]
            cells.append(f"{tok_s:.1f} ({r['bare_channels'][str(c)]:.1f}) / {p95:.2f}")
        lines.append(
            f"| {r['engine']} ({r['detail']}) | "
            + " | ".join(cells)
            + f" | {r['peak_rss_gb']:.2f} ({r['before_load_gb']:.2f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_one(sys.argv[1:]))
