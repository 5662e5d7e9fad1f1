"""ENGINE=llamacpp and ENGINE=openai (a real vLLM server) through the real conversation
pipeline: clean replies, streaming, cancellation, two channels at once, personas with adapters
refused, and, for the server, a server killed mid-reply and one that is down.

The model is the demo model's tokenizer and format on a GPTNeoX vLLM's CPU attention can run
(see tests/engine_support.py); llama.cpp serves the same folder converted to GGUF. It never
ends a reply by itself, so every reply runs to its token limit unless stopped.
No mock stands in for an engine: without llama-cpp-python or VLLM_PYTHON these tests are
skipped locally and fail under CI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.chat.postprocess import FALLBACK_REPLY
from bot.engines.contract import LoadOptions
from bot.engines.openai.engine import SERVER_DOWN_REPLY, SERVER_LOST_REPLY
from tests.conftest import message
from tests.engine_support import (
    VllmServer,
    build_lora_adapter,
    llama_cpp_server,
    llamacpp_settings,
    openai_settings,
    vllm_server,
)
from tests.integration.test_batching import ask_held
from tests.integration.test_console import run_console
from tests.integration.test_pipeline import RecordingSink, ask, stored_texts

JUNK = ("<NL>", "</s>", "ユーザー:", "システム:", "\ufffd", "[PAD")


def assert_clean(reply: str | None) -> None:
    assert reply
    for junk in JUNK:
        assert junk not in reply


async def stop_after_first_update(app: Any, channel: str) -> RecordingSink:
    """Ask for a long reply, /stop it once it has started streaming; returns its sink."""

    class FirstUpdate(RecordingSink):
        def __init__(self) -> None:
            super().__init__()
            self.started = asyncio.Event()

        async def update(self, text: str) -> None:
            await super().update(text)
            self.started.set()

    sink = FirstUpdate()
    task = asyncio.create_task(app.manager.handle(message("長い話をして", channel=channel), sink))
    await asyncio.wait_for(sink.started.wait(), 60)
    stopped = await ask(app, "/stop", channel=channel)
    assert "止めました" in stopped.final
    await asyncio.wait_for(task, 60)
    return sink


def kansai_persona(persona_dir: Path, adapter: Path | None = None) -> Path:
    """`persona_dir` holding the persona "kansai" with the LoRA adapter folder `adapter`; by
    default a stand-in folder, for the engines that must refuse it before loading anything."""
    if adapter is None:
        adapter = persona_dir / "kansai" / "adapter"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")
    persona_dir.mkdir(parents=True, exist_ok=True)
    (persona_dir / "kansai.toml").write_text(
        f'name = "kansai"\ndisplay_name = "関西"\ndescription = "x"\nadapter = "{adapter}"\n',
        encoding="utf-8",
    )
    return persona_dir


# --- llama.cpp --------------------------------------------------------------------------------


@pytest.fixture
def llamacpp(gguf_model: str, engine_cache: Path) -> dict[str, Any]:
    """make_app settings for ENGINE=llamacpp on the converted served demo."""
    return llamacpp_settings(gguf_model, engine_cache)


async def test_llamacpp_replies_cleanly_and_streams(make_app, llamacpp: dict[str, Any]) -> None:
    app = await make_app(**llamacpp, max_new_tokens=48)
    assert app.worker.current.dtype == "q8_0"
    for text in ["こんにちは", "今日はいい天気ですね。"]:
        sink = await ask(app, text)
        assert_clean(sink.final)
        assert len(sink.updates) > 1  # streamed, not delivered at once
    history = stored_texts(app)
    assert [t for role, t in history if role == "user"] == ["こんにちは", "今日はいい天気ですね。"]
    status = await ask(app, "/status")
    assert "エンジン: llamacpp" in status.final and ".gguf" in status.final


async def test_llamacpp_stop_ends_a_reply_in_flight(make_app, llamacpp: dict[str, Any]) -> None:
    app = await make_app(**llamacpp, max_new_tokens=400, n_threads=1)
    sink = await stop_after_first_update(app, "c1")
    assert sink.final.endswith("（/stop で止めました）")


async def test_llamacpp_serves_two_channels_in_one_batch(
    make_app, llamacpp: dict[str, Any]
) -> None:
    app = await make_app(**llamacpp, max_new_tokens=32, temperature=0)
    alone = [
        (await ask(app, q, channel=f"alone{i}")).final for i, q in enumerate(["やあ", "元気？"])
    ]
    sinks = await ask_held(app, [("やあ", {"channel": "b0"}), ("元気？", {"channel": "b1"})])
    assert 2 in app.worker.batch_sizes  # llama.cpp's multi-sequence batch, not one by one
    # Greedy rows in one batch give exactly what each gives alone.
    assert [s.final for s in sinks] == alone
    for sink in sinks:
        assert_clean(sink.final)


async def test_llamacpp_refuses_a_persona_with_an_adapter(
    make_app, llamacpp: dict[str, Any], tmp_path: Path
) -> None:
    persona_dir = kansai_persona(tmp_path / "personas")
    app = await make_app(**llamacpp, persona_dir=persona_dir)
    reply = await ask(app, "/persona kansai", admin=True)
    assert "llama.cpp エンジンでは使えません" in reply.final


def test_console_answers_on_llamacpp(tmp_path: Path, engine_cache: Path, gguf_model: str) -> None:
    result = run_console(
        tmp_path,
        engine_cache,
        ["こんにちは", "元気？"],
        ENGINE="llamacpp",
        MODEL=gguf_model,
        MAX_NEW_TOKENS="24",
    )
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.strip()]
    assert result.stderr.count("bot.replies: reply") == 2
    for line in replies[-2:]:
        assert_clean(line)


async def test_a_server_that_takes_no_token_ids_gets_text_and_says_so(
    make_app, gguf_model: str, engine_cache: Path, tmp_path: Path, caplog
) -> None:
    """llama-cpp-python's server refuses id prompts: the bot falls back to text, and says the
    server's tokenizer is used."""
    from bot.engines.llamacpp.engine import find_gguf

    gguf = find_gguf(gguf_model, LoadOptions(cache_dir=engine_cache))
    with llama_cpp_server(gguf, tmp_path / "server.log", "served-demo") as base_url:
        app = await make_app(
            engine="openai",
            openai_base_url=base_url,
            model="served-demo",
            openai_tokenizer=gguf_model,
            max_new_tokens=24,
        )
        first = await ask(app, "こんにちは")
        assert_clean(first.final)
        assert len(first.updates) > 1  # streamed text
        assert "refused a token-id prompt" in caplog.text
        second = await ask(app, "元気？")
        assert_clean(second.final)
        status = await ask(app, "/status")
        assert "サーバー側のトークナイザーを使用" in status.final


# --- an OpenAI-compatible server: vLLM --------------------------------------------------------


async def test_vllm_replies_cleanly_from_token_ids(make_app, vllm: VllmServer) -> None:
    app = await make_app(**openai_settings(vllm, max_new_tokens=32))
    model = app.worker.current
    assert model.context_length == 1024 and model.prompt_format.name == "rinna"
    for text in ["こんにちは", "今日はいい天気ですね。"]:
        sink = await ask(app, text)
        assert_clean(sink.final)
        assert sink.final != FALLBACK_REPLY or len(sink.updates) > 1
        assert len(sink.updates) > 1  # streamed token by token
    status = await ask(app, "/status")
    assert "エンジン: openai" in status.final and vllm.base_url in status.final
    assert "トークナイザー" not in status.final  # our tokenizer: no note about the server's
    # Device, precision and size are the server's: said so, not shown as "server" or "0.0M".
    assert "デバイス・精度・パラメータ数: サーバー側" in status.final and "0.0M" not in status.final
    models = await ask(app, "/model", admin=True)
    assert vllm.model in models.final


async def test_vllm_serves_two_channels_at_once(make_app, vllm: VllmServer) -> None:
    app = await make_app(**openai_settings(vllm, max_new_tokens=24))
    sinks = await ask_held(app, [("やあ", {"channel": "v0"}), ("元気？", {"channel": "v1"})])
    for sink in sinks:
        assert_clean(sink.final)
    assert 2 in app.worker.batch_sizes


async def test_vllm_stop_closes_the_stream_and_the_server_aborts(
    make_app, vllm: VllmServer
) -> None:
    app = await make_app(**openai_settings(vllm, max_new_tokens=400))
    sink = await stop_after_first_update(app, "c1")
    assert sink.final.endswith("（/stop で止めました）")
    # vLLM aborts a request whose client went away (the reply had ~390 tokens to go); its log
    # says so.
    for _ in range(50):
        if "Aborted request" in vllm.log_file.read_text(errors="replace"):
            break
        await asyncio.sleep(0.2)
    assert "Aborted request" in vllm.log_file.read_text(errors="replace")


async def test_vllm_persona_adapter_not_on_the_server_is_refused(
    make_app, vllm: VllmServer, tmp_path: Path
) -> None:
    persona_dir = kansai_persona(tmp_path / "personas")
    app = await make_app(**openai_settings(vllm, persona_dir=persona_dir))
    reply = await ask(app, "/persona kansai", admin=True)
    assert "--lora-modules kansai=" in reply.final


async def test_vllm_serves_a_persona_through_the_servers_lora_adapter(
    make_app, served_demo: Path, engine_cache: Path, tmp_path: Path
) -> None:
    adapter_dir = build_lora_adapter(served_demo, engine_cache / "kansai-adapter")
    persona_dir = kansai_persona(tmp_path / "personas", adapter_dir)
    greedy = {"temperature": 0, "repetition_penalty": 1.0, "max_new_tokens": 8}
    # What the bot says with and without the persona on its own engine (peft applies the
    # adapter in-process): the reference for the server's adapter.
    local = await make_app(model=str(served_demo), persona_dir=persona_dir, **greedy)
    await ask(local, "/persona kansai", admin=True, channel="local")
    with_adapter = (await ask(local, "こんにちは", channel="local")).final
    without = (await ask(local, "こんにちは", channel="local-base")).final
    assert with_adapter != without  # the adapter changes the reply, so the check below can fail
    lora = ("--enable-lora", "--max-lora-rank", "8", "--lora-modules", f"kansai={adapter_dir}")
    with vllm_server(served_demo, tmp_path / "server.log", extra_args=lora) as server:
        app = await make_app(**openai_settings(server, persona_dir=persona_dir, **greedy))
        chosen = await ask(app, "/persona kansai", admin=True)
        assert "（kansai）にしました" in chosen.final
        assert (await ask(app, "こんにちは")).final == with_adapter
        requests = [
            line for line in server.log_file.read_text().splitlines() if "Received request" in line
        ]
        assert len(requests) == 1 and "LoRARequest(lora_name='kansai'" in requests[0]
        assert (await ask(app, "こんにちは", channel="served-base")).final == without


@pytest.fixture
def vllm_to_kill(served_demo: Path, tmp_path: Path) -> Iterator[VllmServer]:
    """A server of this test's own: the shared one must stay up for the others."""
    with vllm_server(served_demo, tmp_path / "server.log") as server:
        yield server


async def test_vllm_killed_mid_reply_then_down(make_app, vllm_to_kill: VllmServer) -> None:
    vllm = vllm_to_kill
    app = await make_app(**openai_settings(vllm, max_new_tokens=400))

    class KillOnFirstUpdate(RecordingSink):
        async def update(self, text: str) -> None:
            if not self.updates:
                await asyncio.to_thread(vllm.kill)
            await super().update(text)

    sink = KillOnFirstUpdate()
    await asyncio.wait_for(app.manager.handle(message("長い話をして"), sink), 120)
    assert sink.final == SERVER_LOST_REPLY
    down = await asyncio.wait_for(ask(app, "もう一度どうぞ"), 120)
    assert down.final == SERVER_DOWN_REPLY
    # What the person wrote is kept for when the server is back.
    users = [t for role, t in stored_texts(app) if role == "user"]
    assert users == ["長い話をして", "もう一度どうぞ"]
