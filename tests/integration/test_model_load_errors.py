"""Every way a model can fail to load is a ModelLoadError with a clear message: through the
loader, through `/model` (the old model keeps serving) and at start (the configured MODEL is
used instead of a damaged `/model` choice)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.app.bootstrap import bootstrap
from bot.engines.contract import LoadOptions
from bot.engines.transformers.loader import load_model
from bot.errors import GENERIC_FAILURE_REPLY, ModelLoadError
from tests.integration.test_pipeline import ask


def truncate_weights(folder: Path) -> None:
    """An interrupted download: the file stops part way."""
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(os.urandom(4000))


def empty_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"")


def no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def garbage_config(folder: Path) -> None:
    (folder / "config.json").write_bytes(b"\xff\xfe{garbage")


def config_not_an_object(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]", encoding="utf-8")


def garbage_metadata(folder: Path) -> None:
    (folder / "bot_model.json").write_bytes(b"\x00\xff not json")


def metadata_not_an_object(folder: Path) -> None:
    (folder / "bot_model.json").write_text('"rinna"', encoding="utf-8")


def unreadable_metadata(folder: Path) -> None:
    # Tests run as root, where file permissions do not stop reads; a folder in its place does.
    (folder / "bot_model.json").unlink()
    (folder / "bot_model.json").mkdir()


def garbage_tokenizer(folder: Path) -> None:
    (folder / "spiece.model").write_bytes(os.urandom(3000))


# (how the folder is damaged, words the message must contain)
DAMAGE: list[tuple[Callable[[Path], None], str]] = [
    (truncate_weights, "model.safetensors"),
    (garbage_weights, "model.safetensors"),
    (empty_weights, "model.safetensors"),
    (no_weights, "重みファイル"),
    (garbage_config, "config.json"),
    (config_not_an_object, "config.json"),
    (garbage_metadata, "bot_model.json"),
    (metadata_not_an_object, "bot_model.json"),
    (unreadable_metadata, "bot_model.json"),
    (garbage_tokenizer, "spiece.model"),
]
DAMAGE_IDS = [damage.__name__ for damage, _ in DAMAGE]


def damaged_copy(model_cache: Path, target: Path, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(model_cache / "demo-v1", target)
    damage(target)
    return target


LONG_NAMES = [
    ("a" * 300, "長すぎ"),  # one path component over the file system's 255 bytes
    ("/tmp/" + "モデル" * 40 + "/config", "長すぎ"),  # 360 bytes in UTF-8
    ("org/" + "x" * 300, "長すぎ"),
]


@pytest.mark.parametrize(("damage", "words"), DAMAGE, ids=DAMAGE_IDS)
def test_a_damaged_folder_is_a_clear_load_error(model_cache, tmp_path, damage, words):
    folder = damaged_copy(model_cache, tmp_path / "damaged", damage)
    options = LoadOptions(device="cpu", dtype="fp32", cache_dir=model_cache)
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(folder), options)
    assert words in caught.value.user_message
    assert "ダウンロードし直して" in caught.value.user_message  # says what to do


@pytest.mark.parametrize(("name", "words"), LONG_NAMES, ids=["name", "path", "hub-id"])
def test_an_overlong_name_is_a_clear_load_error(model_cache, name, words):
    options = LoadOptions(device="cpu", dtype="fp32", cache_dir=model_cache)
    with pytest.raises(ModelLoadError) as caught:
        load_model(name, options)
    message = caught.value.user_message
    assert words in message
    assert len(message) < 250  # the name is shortened, not echoed whole


async def assert_model_command_answers_clearly(app, spec: str, words: str, caplog) -> None:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        reply = await ask(app, f"/model {spec}", admin=True)
    assert reply.final != GENERIC_FAILURE_REPLY
    assert words in reply.final, reply.final
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    assert app.worker.current.name == "demo"  # the old model keeps serving


@pytest.mark.parametrize(("damage", "words"), DAMAGE, ids=DAMAGE_IDS)
async def test_model_command_on_a_damaged_folder_answers_the_load_error(
    make_app, model_cache, tmp_path, caplog, damage, words
):
    app = await make_app(replies=["まだ動いています。"])
    folder = damaged_copy(model_cache, tmp_path / "damaged", damage)
    await assert_model_command_answers_clearly(app, str(folder), words, caplog)
    assert (await ask(app, "聞こえますか")).final == "まだ動いています。"


@pytest.mark.parametrize(("name", "words"), LONG_NAMES, ids=["name", "path", "hub-id"])
async def test_model_command_with_an_overlong_name_answers_the_load_error(
    make_app, caplog, name, words
):
    app = await make_app(replies=["まだ動いています。"])
    await assert_model_command_answers_clearly(app, name, words, caplog)


async def test_the_bot_starts_on_model_when_the_chosen_folder_was_damaged(
    make_settings, model_cache, tmp_path, caplog
):
    folder = tmp_path / "chosen"
    shutil.copytree(model_cache / "demo-v1", folder)
    settings = make_settings()  # the real loader and a SQLite file, MODEL=demo
    first = bootstrap(settings)
    try:
        await first.start()
        switched = await ask(first, f"/model {folder}", admin=True)
        assert "切り替えました" in switched.final
    finally:
        await first.close()

    truncate_weights(folder)
    second = bootstrap(settings)
    try:
        with caplog.at_level(logging.WARNING):
            loaded = await second.start()
        assert loaded.name == "demo" and second.worker.current is loaded
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(str(folder) in w and "MODEL=demo" in w for w in warnings), warnings
        assert (await ask(second, "こんにちは")).final
    finally:
        await second.close()
