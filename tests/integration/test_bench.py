"""The benchmark's machinery, on a tiny model (its figures belong in docs, not in tests)."""

from __future__ import annotations

from bot.bench import BenchShape, run_benchmark

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
