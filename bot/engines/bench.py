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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.bench import FULL, BenchShape, _machine, bare_generate, ensure_bench_model
from bot.bootstrap import bootstrap
from bot.messages import ConversationKey, IncomingMessage, NullSink
from bot.prompt_format import Turn
from bot.settings import Settings

MESSAGE = "最近のおすすめの本を教えてください。週末にゆっくり読みたいです。"
_REPLY_LINE = re.compile(r"prompt_ms=(\d+) generation_ms=(\d+)")


@dataclass
class EngineResult:
    engine: str
    detail: str
    prefill_ms: float = 0.0  # first token of a reply to a ~512-token prompt
    prompt_tokens: int = 0
    decode_tok_s: float = 0.0  # one channel, through the bot
    bare_decode_tok_s: float = 0.0  # one stream, the engine alone
    channels: dict[int, tuple[float, float]] = field(default_factory=dict)  # tok/s, p95 s
    bare_channels: dict[int, float] = field(default_factory=dict)  # the engine alone, tok/s
    peak_rss_gb: float = 0.0


class _ReplyTimes(logging.Handler):
    """Reads prompt_ms/generation_ms from the bot's one-line reply log."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _settings(engine: str, model: str, workdir: Path, cache: Path, batch: int, tokens: int,
              base_url: str) -> Settings:  # fmt: skip
    return Settings(
        _env_file=None,
        engine=engine,  # type: ignore[arg-type]
        model=model,
        openai_base_url=base_url,
        database_url=f"sqlite:///{workdir / 'bench.sqlite3'}",
        model_cache_dir=cache,
        device="cpu",
        dtype="fp32",
        max_batch_size=batch,
        max_queue=1000,
        user_rate_limit_per_minute=0,
        temperature=0,
        repetition_penalty=1.0,
        max_new_tokens=tokens,
        generation_timeout_s=3600,
        log_level="WARNING",
    )


def _long_message(tokenizer: Any, target: int) -> str:
    """A message of about `target` tokens (the ~512-token history of the prefill figure)."""
    text = MESSAGE
    while len(tokenizer.encode(text)) < target:
        text += MESSAGE
    return text


async def _bench_engine(
    engine: str, model: str, cache: Path, counts: tuple[int, ...], tokens: int, base_url: str
) -> EngineResult:
    handler = _ReplyTimes()
    replies = logging.getLogger("bot.replies")
    replies.addHandler(handler)
    replies.setLevel(logging.INFO)
    replies.propagate = False
    with tempfile.TemporaryDirectory() as workdir:
        app = bootstrap(
            _settings(engine, model, Path(workdir), cache, max(counts), tokens, base_url)
        )
        loaded = await app.start()
        try:
            result = EngineResult(engine, loaded.dtype)

            def key(name: str) -> ConversationKey:
                return ConversationKey("bench", "w", name)

            await app.manager.handle(IncomingMessage(key("warm"), "u", "u", MESSAGE), NullSink())
            # Prefill: a fresh channel whose one message makes a ~512-token prompt.
            long = _long_message(loaded.tokenizer, 480)
            handler.lines.clear()
            await app.manager.handle(IncomingMessage(key("prefill"), "u", "u", long), NullSink())
            prompt = loaded.prompt_format.render([Turn("user", long, "u")])
            result.prompt_tokens = len(loaded.tokenizer.encode(prompt))
            match = _REPLY_LINE.search(handler.lines[-1])
            result.prefill_ms = float(match.group(1)) if match else 0.0
            for count in counts:
                latencies: list[float] = []

                async def one(
                    i: int, count: int = count, latencies: list[float] = latencies
                ) -> None:
                    started = time.perf_counter()
                    message = IncomingMessage(key(f"c{count}-{i}"), f"u{i}", "u", MESSAGE)
                    await app.manager.handle(message, NullSink())
                    latencies.append(time.perf_counter() - started)

                before = app.worker.tokens_generated
                handler.lines.clear()
                started = time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(count)))
                wall = time.perf_counter() - started
                made = app.worker.tokens_generated - before
                ordered = sorted(latencies)
                p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
                result.channels[count] = (made / wall, p95)
                if count == 1:
                    line = _REPLY_LINE.search(handler.lines[-1])
                    if line and int(line.group(2)):
                        result.decode_tok_s = made / (int(line.group(2)) / 1000)
            short = loaded.prompt_format.render([Turn("user", MESSAGE, "u")])
            ids = loaded.tokenizer.encode(short)
            for count in counts:
                took = await app.worker.call(
                    lambda count=count: _bare(app.worker.engine, loaded, ids, tokens, count)
                )
                result.bare_channels[count] = count * tokens / took
            result.bare_decode_tok_s = result.bare_channels[min(counts)]
        finally:
            await app.close()
    result.peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def _bare(engine: Any, loaded: Any, ids: list[int], tokens: int, rows: int) -> float:
    """Seconds for the engine alone to make `tokens` new tokens for each of `rows` copies."""
    if engine.name == "transformers":
        import torch

        return bare_generate(loaded, torch.tensor([ids]), tokens, rows)
    from bot.engines import RowRequest
    from bot.sampling import SamplingParams

    class Count:
        def token(self, row: int, token_id: int) -> bool:
            return True

        def text(self, row: int, text: str) -> bool:
            return True

        def done(self, row: int) -> bool:
            return False

    params = SamplingParams(max_new_tokens=tokens, temperature=0, repetition_penalty=1.0)
    # No stop ids: every row makes exactly `tokens` tokens.
    requests = [RowRequest(list(ids), params) for _ in range(rows)]
    started = time.perf_counter()
    engine.generate_ids(loaded, requests, Count())
    return time.perf_counter() - started


def _prepare(engine: str, cache: Path, shape: BenchShape, quant: str) -> str:
    model = ensure_bench_model(cache, shape)
    if engine != "llamacpp":
        return str(model)
    from bot.engines.llamacpp.convert import convert, gguf_path
    from bot.model_loader import LoadOptions

    if not gguf_path(cache, str(model), quant).exists():
        convert(str(model), quant, LoadOptions(cache_dir=cache))
    return str(model)


def run_one(args: list[str]) -> int:
    """The child process: `--engine-child ENGINE CACHE COUNTS TOKENS QUANT URL OUT`."""
    engine, cache, counts, tokens, quant, url, out = args
    model = _prepare(engine, Path(cache), FULL, quant)
    if engine == "openai":
        model = url.split("|", 1)[1] if "|" in url else model
        url = url.split("|", 1)[0]
    result = asyncio.run(
        _bench_engine(
            engine,
            model,
            Path(cache),
            tuple(int(c) for c in counts.split(",")),
            int(tokens),
            url,
        )
    )
    Path(out).write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0


def run_engine_benchmark(
    cache: Path,
    engines: list[str],
    counts: tuple[int, ...] = (1, 4, 8),
    tokens: int = 64,
    quant: str = "q4_k_m",
    openai_url: str = "",
) -> str:
    """Each engine in a child process; returns the markdown table."""
    results = []
    for engine in engines:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [
                sys.executable,
                "-m",
                "bot.engines.bench",
                engine,
                str(cache),
                ",".join(map(str, counts)),
                str(tokens),
                quant,
                openai_url,
                out.name,
            ]
            subprocess.run(command, check=True)
            results.append(json.loads(Path(out.name).read_text(encoding="utf-8")))
    return report(results, counts, tokens, FULL)


def report(results: list[dict[str, Any]], counts: tuple[int, ...], tokens: int,
           shape: BenchShape) -> str:  # fmt: skip
    head = " | ".join(f"{c} ch tok/s (bare) / p95 s" for c in counts)
    lines = [
        f"Machine: {_machine()}",
        f"Model: {shape.describe()}, random weights; greedy, {tokens} new tokens per reply.",
        "",
        f"| engine | prefill ms (prompt tokens) | decode tok/s, bot (bare) | {head} | peak RSS GB |",
        "|---|---:|---:|" + "---:|" * len(counts) + "---:|",
    ]
    for r in results:
        cells = []
        for c in counts:
            tok_s, p95 = r["channels"][str(c)]
            cells.append(f"{tok_s:.1f} ({r['bare_channels'][str(c)]:.1f}) / {p95:.2f}")
        lines.append(
            f"| {r['engine']} ({r['detail']}) | {r['prefill_ms']:.0f} ({r['prompt_tokens']}) | "
            f"{r['decode_tok_s']:.1f} ({r['bare_decode_tok_s']:.1f}) | "
            + " | ".join(cells)
            + f" | {r['peak_rss_gb']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_one(sys.argv[1:]))
