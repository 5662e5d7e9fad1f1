"""Which format a model folder is served with, from folders laid out as `huggingface-cli
download` leaves them: a `--local-dir` folder named by the user (with huggingface_hub's own
download metadata) and the hub cache's `models--org--name/snapshots/<commit>` tree."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from bot.engines.contract import LoadOptions
from bot.engines.transformers.loader import load_model
from bot.models.catalogue import find_entry
from bot.models.demo import ensure_demo_model
from bot.models.files import METADATA_FILE
from bot.models.identity import card_identity
from tests.integration.test_pipeline import ask

PPO = "rinna/japanese-gpt-neox-3.6b-instruction-ppo"
COMMIT = "60ed51e4c5b8f267fef9fc04baca27d1d2e04158"
# The head of rinna's PPO card as the hub serves it (README.md, abridged after the usage part).
PPO_CARD = f"""---
language: ja
thumbnail: https://github.com/rinnakk/japanese-pretrained-models/blob/master/rinna.png
tags:
- gpt_neox
- text-generation
- lm
- nlp
license: mit
datasets:
- Anthropic/hh-rlhf
inference: false
base_model: rinna/japanese-gpt-neox-3.6b
---

# japanese-gpt-neox-3.6b-instruction-ppo

![rinna-icon](./rinna.png)

# Overview
This repository provides a Japanese GPT-NeoX model of 3.6 billion parameters. The model is based on [`rinna/japanese-gpt-neox-3.6b-instruction-sft-v2`](https://huggingface.co/rinna/japanese-gpt-neox-3.6b-instruction-sft-v2) and has been aligned to serve as an instruction-following conversational agent.

* **Model Series**

    | Variant | Link |
    | :-- | :--|
    | 3.6B PPO | https://huggingface.co/rinna/japanese-gpt-neox-3.6b-instruction-ppo |
    | 3.6B SFT-v2 | https://huggingface.co/rinna/japanese-gpt-neox-3.6b-instruction-sft-v2 |
    | 3.6B SFT | https://huggingface.co/rinna/japanese-gpt-neox-3.6b-instruction-sft |
    | 3.6B pretrained | https://huggingface.co/rinna/japanese-gpt-neox-3.6b |

# How to use the model

~~~~python
tokenizer = AutoTokenizer.from_pretrained("{PPO}", use_fast=False)
model = AutoModelForCausalLM.from_pretrained("{PPO}")
~~~~
"""


def model_files(model_cache: Path) -> dict[str, bytes]:
    """The tiny rinna-style model's files (GPTNeoX + sentencepiece with <NL>), without the
    demo's own metadata: a real download has none."""
    demo = ensure_demo_model(model_cache)
    return {
        p.name: p.read_bytes() for p in demo.iterdir() if p.is_file() and p.name != METADATA_FILE
    }


def local_dir_download(root: Path, model_cache: Path, *, card: bool = True) -> Path:
    """What `huggingface-cli download rinna/… --local-dir root/rinna-3.6b` leaves."""
    from huggingface_hub._local_folder import write_download_metadata

    folder = root / "rinna-3.6b"
    folder.mkdir(parents=True)
    files = model_files(model_cache)
    if card:
        files["README.md"] = PPO_CARD.encode()
    for name, data in files.items():
        (folder / name).write_bytes(data)
        write_download_metadata(folder, name, COMMIT, hashlib.sha1(data).hexdigest())
    return folder


def hub_cache_download(cache: Path, model_cache: Path, repo_id: str = PPO) -> Path:
    """The hub cache's layout: blobs named by hash, a ref, and a snapshot of symlinks."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot.mkdir(parents=True)
    for name, data in model_files(model_cache).items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../..") / "blobs" / blob.name)
    return snapshot


def load(folder: Path, model_cache: Path, prompt_format: str = "auto"):
    options = LoadOptions(
        device="cpu", dtype="fp32", cache_dir=model_cache, prompt_format=prompt_format
    )
    return load_model(str(folder), options)


def test_a_local_dir_download_named_rinna_3_6b_is_served_as_the_ppo_model(
    tmp_path: Path, model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = local_dir_download(tmp_path, model_cache)
    assert (folder / ".cache/huggingface/download/README.md.metadata").is_file()
    with caplog.at_level(logging.INFO, logger="bot.engines.transformers.loader"):
        loaded = load(folder, model_cache)
    assert loaded.prompt_format.name == "rinna"
    assert loaded.prompt_format.newline == "<NL>"
    assert loaded.sampling_defaults == find_entry(PPO).sampling
    assert "README.md" in loaded.format_reason and PPO.split("/")[1] in loaded.format_reason
    assert any("prompt format rinna" in r.getMessage() for r in caplog.records)


def test_a_hub_cache_snapshot_is_known_by_its_path(tmp_path: Path, model_cache: Path) -> None:
    loaded = load(hub_cache_download(tmp_path / "hub", model_cache), model_cache)
    assert loaded.prompt_format.name == "rinna"
    assert loaded.sampling_defaults == find_entry(PPO).sampling
    assert "models--" not in loaded.format_reason and PPO in loaded.format_reason


def test_an_unknown_instruction_repo_in_the_hub_cache_is_recognised_by_name(
    tmp_path: Path, model_cache: Path
) -> None:
    repo_id = "rinna/japanese-gpt-neox-3.6b-instruction-sft-v9"
    loaded = load(hub_cache_download(tmp_path / "hub", model_cache, repo_id), model_cache)
    assert loaded.prompt_format.name == "rinna"


def test_without_card_or_name_the_tokenizer_decides_and_prompt_format_overrides(
    tmp_path: Path, model_cache: Path
) -> None:
    folder = local_dir_download(tmp_path, model_cache, card=False)
    plain = load(folder, model_cache)
    assert plain.prompt_format.name == "plain" and plain.prompt_format.newline == "<NL>"
    forced = load(folder, model_cache, prompt_format="rinna")
    assert forced.prompt_format.name == "rinna"
    assert "PROMPT_FORMAT" in forced.format_reason


def test_config_name_or_path_names_the_model(tmp_path: Path, model_cache: Path) -> None:
    import json

    folder = local_dir_download(tmp_path, model_cache, card=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": PPO}))
    assert load(folder, model_cache).prompt_format.name == "rinna"


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        pytest.param(PPO_CARD, PPO.split("/")[1], id="ppo-title-despite-series-table"),
        pytest.param(
            "---\nbase_model: rinna/japanese-gpt-neox-3.6b\n---\n\n"
            "# japanese-gpt-neox-3.6b-instruction-sft\n\n| 3.6B PPO | "
            "https://huggingface.co/rinna/japanese-gpt-neox-3.6b-instruction-ppo |\n",
            "japanese-gpt-neox-3.6b-instruction-sft",
            id="sft-title",
        ),
        pytest.param(
            "# Model card\n\nSee rinna/japanese-gpt-neox-3.6b.\n"
            'AutoModelForCausalLM.from_pretrained("line-corporation/japanese-large-lm-3.6b-'
            'instruction-sft")\n',
            "line-corporation/japanese-large-lm-3.6b-instruction-sft",
            id="usage-when-the-title-names-no-model",
        ),
        pytest.param("---\nlicense: mit\n---\n# Model card\n", None, id="nothing"),
        pytest.param("", None, id="empty"),
    ],
)
def test_model_cards(card: str, expected: str | None) -> None:
    found = card_identity(card)
    assert (found[0] if found else None) == expected


async def test_the_shipped_rinna_personas_are_accepted_and_status_says_why(
    tmp_path: Path, model_cache: Path, make_app
) -> None:
    folder = local_dir_download(tmp_path, model_cache)
    app = await make_app(model=str(folder))
    assert app.worker.current is not None and app.worker.current.prompt_format.name == "rinna"
    sink = await ask(app, "/persona friendly", admin=True)
    assert "フレンドリー" in (sink.final or ""), sink.final
    status = (await ask(app, "/status")).final or ""
    assert "形式: rinna" in status and "README.md" in status
