"""The benchmark's machinery, on a tiny model (its figures belong in docs, not in tests)."""

from __future__ import annotations

import re

from bot.bench.channels import BenchShape, run_benchmark

TINY = BenchShape(layers=2, hidden=64, heads=4, vocab=2000)


async def test_the_benchmark_drives_bursts_and_reports_every_table(model_cache):
    report = await run_benchmark(model_cache, channels=(1, 3), new_tokens=6, shape=TINY)
    rows = {
        line.split("|")[1].strip(): line
        for line in report.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    assert set(rows) == {"1", "3"}
    assert rows["3"].split("|")[3].strip() == "3"  # the burst of three formed one batch
    assert "| tok/s |" in report and "| vs batch 1 |" in report
    assert "Overhead for one reply" in report
    assert "GPTNeoX 2 x 64, vocab 2,000" in report


def test_the_engine_benchmark_measures_each_engine_in_a_process_of_its_own(engine_cache):
    from bot.bench.engines import run_engine_benchmark
    from tests.engine_support import require_module

    require_module("llama_cpp")
    report = run_engine_benchmark(
        engine_cache, ["transformers", "llamacpp"], counts=(1, 2), tokens=4, shape=TINY
    )
    rows = [line for line in report.splitlines() if line.startswith("| ") and "GB" not in line]
    assert "llamacpp (q4_k_m)" in report
    # Two tables, each with a row per engine: one stream (prefill, decode, bot / bare, memory),
    # then the channels (1, 2, memory).
    assert [row.split("|")[1].split()[0] for row in rows] == ["transformers", "llamacpp"] * 2
    assert [len(row.split("|")) - 3 for row in rows] == [4, 4, 3, 3]
    for row in rows:
        peak, before = row.split("|")[-2].strip().rstrip(")").split(" (")
        assert float(peak) >= float(before) > 0
        assert all(float(n) > 0 for n in re.findall(r"\d+\.\d+", row))
    assert "GPTNeoX 2 x 64, vocab 2,000" in report
