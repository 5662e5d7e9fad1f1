"""Every generation uses the KV cache, whatever the checkpoint's config.json says.

A checkpoint saved after training often carries `"use_cache": false` and no
generation_config.json; transformers then re-feeds the whole sequence at every step. The tests
count what the model is fed per step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.bench.channels import bare_generate
from tests.integration.test_pipeline import ask


@pytest.fixture
def cache_off_folder(model_cache: Path, tmp_path: Path) -> Path:
    """The demo model as a training run would have saved it: cache off, no generation config."""
    folder = tmp_path / "saved-after-training"
    shutil.copytree(model_cache / "demo-v1", folder)
    (folder / "generation_config.json").unlink()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["use_cache"] = False
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def record_input_lengths(model: Any) -> list[int]:
    """The sequence length of every forward call of `model`, in order."""
    lengths: list[int] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        lengths.append(int(ids.shape[1]))

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return lengths


async def test_a_reply_feeds_the_prompt_once_then_one_token_a_step(make_app, cache_off_folder):
    app = await make_app(model=str(cache_off_folder), temperature=0, max_new_tokens=8)
    lengths = await app.worker.call(lambda: record_input_lengths(app.worker.current.model))

    sink = await ask(app, "今日はいい天気ですね。散歩に行きましょうか。")

    assert sink.final
    assert len(lengths) > 2, lengths
    assert lengths[0] > 10 and lengths[1:] == [1] * (len(lengths) - 1), lengths


async def test_a_batch_feeds_its_prompts_once_then_one_token_a_step(make_app, cache_off_folder):
    from tests.integration.test_batching import ask_held

    app = await make_app(model=str(cache_off_folder), temperature=0, max_new_tokens=8)
    lengths = await app.worker.call(lambda: record_input_lengths(app.worker.current.model))

    await ask_held(app, [(f"質問{i}です。よろしく", {"channel": f"c{i}"}) for i in range(3)])

    assert list(app.worker.batch_sizes)[-1] == 3
    assert lengths[0] > 5 and lengths[1:] == [1] * (len(lengths) - 1), lengths


async def test_the_benchmark_ceiling_uses_the_cache_too(make_app, cache_off_folder):
    import torch

    app = await make_app(model=str(cache_off_folder))
    loaded = app.worker.current

    def run() -> list[int]:
        lengths = record_input_lengths(loaded.model)
        bare_generate(loaded, torch.tensor([loaded.tokenizer.encode("こんにちは。元気ですか")]), 6)
        return lengths

    lengths = await app.worker.call(run)
    assert len(lengths) == 6 and lengths[1:] == [1] * 5, lengths
