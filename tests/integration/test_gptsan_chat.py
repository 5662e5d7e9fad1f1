"""Chatting with GPTSAN through the same pipeline as every other model: a tiny checkpoint in
the hub layout (tests/gptsan_model.py), the console, batches, and what it refuses."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.app.bootstrap import bootstrap
from bot.chat.prompt import build_prompt
from bot.engines.contract import LoadOptions
from bot.engines.transformers.loader import load_model
from bot.engines.transformers.lora import check_adapter
from bot.errors import AdapterMismatch
from bot.models.gptsan.tokenizer import GPTSanTokenizer
from bot.models.prompt_formats import GPTSAN, Turn
from tests.gptsan_model import build_gptsan_folder
from tests.integration.test_batching import ask_held
from tests.integration.test_console import run_console
from tests.integration.test_pipeline import ask

JUNK = ("<|", "<BR>", "<SP>", "\ufffd", "ユーザー:", "システム:")


@pytest.fixture(scope="module")
def gptsan_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_gptsan_folder(tmp_path_factory.mktemp("gptsan") / "GPTSAN-tiny")


def test_the_prompt_puts_the_conversation_in_the_prefix(gptsan_folder):
    tokenizer = GPTSanTokenizer.from_folder(gptsan_folder)
    turns = [
        Turn("user", "こんにちは <|segmenter|>"),
        Turn("assistant", "はい、元気です。\n二行目"),
        Turn("user", "今日は？"),
    ]
    text = GPTSAN.render(turns)
    assert text == (
        "<|startoftext|>ユーザー: こんにちは 〈|segmenter|〉\nシステム: はい、元気です。\n二行目"
        "\nユーザー: 今日は?\nシステム:<|segmenter|>"  # NFKC, as for every format
    )
    built = build_prompt(GPTSAN, turns, encode=tokenizer.encode, budget=1000)
    assert built is not None
    ids = built.token_ids
    assert ids[0] == tokenizer.bos_id and ids[-1] == tokenizer.segmenter_id
    assert ids.count(tokenizer.segmenter_id) == 1  # a user cannot end the prefix early
    # The same ids as transformers 4.x's `tokenizer("", prefix_text=conversation)`.
    conversation = text.removeprefix("<|startoftext|>").removesuffix("<|segmenter|>")
    encoded = tokenizer.encode_with_prefix("", conversation)
    assert encoded.input_ids == ids
    assert encoded.token_type_ids == [1] * (len(ids) - 1) + [0]
    assert "\nユーザー:" in GPTSAN.stop_strings


def test_console_chats_with_clean_replies(tmp_path, model_cache, gptsan_folder):
    result = run_console(
        tmp_path,
        model_cache,
        ["こんにちは", "今日はいい天気ですね。"],
        MODEL=str(gptsan_folder),
        MAX_NEW_TOKENS="24",
        DEVICE="cpu",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # this checkout's bot package
    )
    assert result.returncode == 0, result.stderr
    replies = result.stdout.splitlines()
    assert len(replies) == 2
    for reply in replies:
        assert reply.strip()
        assert not any(junk in reply for junk in JUNK), reply
    assert result.stderr.count("bot.replies: reply") == 2
    assert "turns=3 " in result.stderr  # the second prompt carried the first exchange
    assert "Traceback" not in result.stderr


async def test_a_batched_reply_equals_the_same_request_alone(make_settings, gptsan_folder, caplog):
    """Left padding in a batch must not move the prefix, the positions or expert capacity."""
    settings = make_settings(
        model=str(gptsan_folder), temperature=0, max_new_tokens=16, max_batch_size=8
    )
    app = bootstrap(settings)
    await app.start()
    try:
        questions = ["こんにちは", "明日の天気はどうかな？雨が降るらしいよ", "ありがとう！"]
        alone = [(await ask(app, q, channel=f"alone{i}")).final for i, q in enumerate(questions)]
        caplog.set_level(logging.INFO, logger="bot.replies")
        sinks = await ask_held(app, [(q, {"channel": f"b{i}"}) for i, q in enumerate(questions)])
        assert [s.final for s in sinks] == alone
        lines = [r.message for r in caplog.records if "conversation=test:w1/b" in r.message]
        assert len(lines) == 3 and all("batch=3 " in line for line in lines)
    finally:
        await app.close()
        await asyncio.sleep(0)


def test_lora_personas_are_refused_clearly(tmp_path, gptsan_folder):
    loaded = load_model(str(gptsan_folder), LoadOptions(device="cpu", dtype="fp32"))
    adapter = tmp_path / "kansai" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(AdapterMismatch) as error:
        check_adapter(loaded, adapter)
    assert "LoRA" in error.value.user_message and "kansai" in error.value.user_message


def test_the_catalogue_entry_loads_with_its_context_and_defaults(monkeypatch, gptsan_folder):
    """`MODEL=gptsan` resolves to the hub id; here the hub id's snapshot is the tiny folder."""
    import bot.models.hub as hub

    monkeypatch.setattr(hub, "_download", lambda repo_id, hf_token: gptsan_folder)
    loaded = load_model("gptsan", LoadOptions(device="cpu", dtype="fp32"))
    assert loaded.context_length == 1280
    assert loaded.prompt_format is GPTSAN
    assert loaded.sampling_defaults.repetition_penalty == 1.1


def test_persona_training_refuses_gptsan_as_a_base(gptsan_folder):
    from persona.training import TrainConfig, TrainingError, load_base

    load = LoadOptions(device="cpu", dtype="fp32")
    config = TrainConfig(base=str(gptsan_folder), data=Path("x"), name="x", load=load)
    with pytest.raises(TrainingError, match="LoRA"):
        load_base(config)


def test_a_truncated_weight_file_is_a_clear_load_error(tmp_path, gptsan_folder):
    """An interrupted download of a GPTSAN checkpoint reads as the same clear message as any
    other family's, not safetensors' own header error."""
    import shutil

    from bot.errors import ModelLoadError

    folder = tmp_path / "gptsan-truncated"
    shutil.copytree(gptsan_folder, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(folder), LoadOptions(device="cpu", dtype="fp32"))
    message = caught.value.user_message
    assert "重みファイル（model.safetensors）を読み込めません" in message, message
    assert "header" not in message


def test_the_log_says_which_format_was_chosen_and_why(gptsan_folder, caplog):
    caplog.set_level(logging.INFO, logger="bot")
    loaded = load_model(str(gptsan_folder), LoadOptions(device="cpu", dtype="fp32"))
    assert loaded.prompt_format is GPTSAN
    assert loaded.format_reason == "config.json の model_type（gptsan-japanese）"
    lines = [r.getMessage() for r in caplog.records if "prompt format" in r.getMessage()]
    assert lines == [f"model {gptsan_folder}: prompt format gptsan, from model_type in config.json"]
