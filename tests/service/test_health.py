"""The health and metrics port, read over HTTP: a real bot process (`python -m bot run`, Slack
in HTTP mode against the fake Slack) and an app whose platform is not connected."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.chat.replies import SHUTTING_DOWN_REPLY
from bot.messages import NullSink
from tests.conftest import message
from tests.platforms.slack_fake_server import FakeSlack, fake_slack, mention
from tests.service.bot_process import ROOT, BotProcess, free_port
from tests.service.test_multi_process import bot_env, deliver, logs_of

WAIT_S = 60.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
def bots() -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for bot in started:
        bot.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url) as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} from the Prometheus text format."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def total(found: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` that carries `labels` (and maybe others)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in found.items() if n == name and wanted <= have)


async def test_a_running_bot_reports_health_and_metrics_over_http(
    fake, bots, model_cache, tmp_path: Path
):
    slack_port, health_port = free_port(), free_port()
    env = bot_env(fake, f"sqlite:///{tmp_path / 'bot.sqlite3'}", model_cache, slack_port)
    bot = BotProcess("bot", tmp_path / "bot", {**env, "HEALTH_PORT": str(health_port)}).start()
    bots.append(bot)
    await bot.wait_port(slack_port)
    base = f"http://127.0.0.1:{health_port}"

    status, content_type, body = await get(f"{base}/healthz")
    assert status == 200, logs_of(bots)
    assert content_type.startswith("application/json")
    assert json.loads(body) == {
        "status": "ok",
        "model": {"loaded": True, "name": "demo", "unloaded_while_idle": False},
        "database": True,
        "platforms": {"slack": True},
    }

    events = f"http://127.0.0.1:{slack_port}/slack/events"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await deliver(session, events, mention("こんにちは", ts="1700000001.000100"), "Ev1")
        await deliver(session, events, mention("", ts="1700000002.000100"), "Ev2")  # empty
    slack = {"platform": "slack"}
    async with asyncio.timeout(WAIT_S):  # until the reply is finished and counted
        while True:
            status, content_type, body = await get(f"{base}/metrics")
            found = samples(body)
            if total(found, "chatbot_replies_total", **slack):
                break
            await asyncio.sleep(0.2)
    assert status == 200 and content_type.startswith("text/plain")
    assert value(found, "chatbot_messages_total", **slack) == 2
    assert total(found, "chatbot_replies_total", **slack) == 1  # whatever made it stop
    assert value(found, "chatbot_refusals_total", platform="slack", reason="invalid_message") == 1
    assert ("chatbot_errors_total", frozenset(slack.items())) not in found
    assert value(found, "chatbot_reply_latency_seconds_count", **slack) == 1
    assert value(found, "chatbot_time_to_first_token_seconds_count", **slack) == 1
    assert value(found, "chatbot_reply_tokens_per_second_count", **slack) == 1
    assert 1 <= value(found, "chatbot_generated_tokens_total", **slack) <= 8  # MAX_NEW_TOKENS
    assert value(found, "chatbot_tokens_per_second") > 0
    assert value(found, "chatbot_queue_depth") == 0
    assert value(found, "chatbot_model_loaded") == 1
    assert (
        value(
            found,
            "chatbot_model_info",
            model="demo",
            device="cpu",
            dtype="float32",
            quantization="none",
        )
        == 1
    )
    assert value(found, "chatbot_model_load_seconds") > 0
    assert value(found, "chatbot_memory_bytes", kind="process_resident") > 50 * 2**20
    assert value(found, "chatbot_memory_bytes", kind="gpu_allocated") == 0
    assert value(found, "chatbot_platform_connected", **slack) == 1
    assert value(found, "chatbot_database_up") == 1


async def test_health_is_503_while_a_configured_platform_is_not_connected(make_app):
    app = await make_app(replies=[], slack_bot_token="xoxb-test", health_port=0)
    status, _, body = await get(f"http://127.0.0.1:{app.monitor.port}/healthz")
    assert status == 503
    assert json.loads(body) == {
        "status": "unavailable",
        "model": {"loaded": True, "name": "demo", "unloaded_while_idle": False},
        "database": True,
        "platforms": {"slack": False},
    }


async def test_the_health_port_is_off_unless_configured(make_app):
    app = await make_app(replies=[])
    assert app.monitor.port is None


@pytest.mark.parametrize("command", ["console", "run"])
def test_a_busy_health_port_stops_start_up_with_one_error_line(
    command: str, model_cache, tmp_path: Path
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_"))},
            "PYTHONPATH": str(ROOT),
            "MODEL": "demo",
            "MODEL_CACHE_DIR": str(model_cache),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
            "HEALTH_PORT": str(port),
        }
        if command == "run":
            env |= {
                "SLACK_BOT_TOKEN": "xoxb-test",
                "SLACK_SIGNING_SECRET": "s",
                "SLACK_MODE": "http",
            }
        done = subprocess.run(
            [sys.executable, "-m", "bot", command],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
        )
    log = done.stdout + done.stderr
    assert done.returncode == 2, log
    assert "Traceback" not in log
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert f"HEALTH_PORT={port}" in errors[0] and "in use" in errors[0]


async def test_the_console_is_healthy_with_a_platform_token_in_the_environment(
    model_cache, tmp_path: Path
):
    # A .env written for `run` also serves `console`, which connects to no platform.
    health_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_"))},
        "PYTHONPATH": str(ROOT),
        "MODEL": "demo",
        "MODEL_CACHE_DIR": str(model_cache),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "DISCORD_TOKEN": "a-token-for-run",
        "HEALTH_PORT": str(health_port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "console",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,  # kept open: the console waits for input
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(WAIT_S * 2):
            while True:
                try:
                    status, _, body = await get(f"http://127.0.0.1:{health_port}/healthz")
                except aiohttp.ClientError:
                    status, body = 0, "{}"
                if json.loads(body).get("model", {}).get("loaded"):
                    break
                await asyncio.sleep(0.2)
    finally:
        process.kill()
        await process.wait()
    assert status == 200, body
    assert json.loads(body)["platforms"] == {}


async def test_while_shutting_down_health_says_stopping_and_turned_away_messages_are_counted(
    make_app,
):
    app = await make_app(replies=[], health_port=0)
    base = f"http://127.0.0.1:{app.monitor.port}"
    assert (await get(f"{base}/healthz"))[0] == 200
    await app.stop_replies(0)
    sink = NullSink()
    await app.manager.handle(message("こんにちは"), sink)

    status, _, body = await get(f"{base}/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stopping"
    assert sink.text == SHUTTING_DOWN_REPLY
    found = samples((await get(f"{base}/metrics"))[2])
    assert value(found, "chatbot_refusals_total", platform="test", reason="shutting_down") == 1
    assert value(found, "chatbot_messages_total", platform="test") == 1


async def test_a_model_unloaded_while_idle_is_healthy_since_the_next_message_reloads_it(
    make_app,
):
    app = await make_app(replies=[], health_port=0, idle_unload_minutes=0.005)  # 0.3 s
    async with asyncio.timeout(WAIT_S):
        while app.worker.current is not None:
            await asyncio.sleep(0.05)
    status, _, body = await get(f"http://127.0.0.1:{app.monitor.port}/healthz")
    assert status == 200, body
    assert json.loads(body)["model"] == {
        "loaded": False,
        "name": "demo",
        "unloaded_while_idle": True,
    }
