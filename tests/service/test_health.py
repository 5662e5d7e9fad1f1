"""The health and metrics port, read over HTTP: a real bot process (`python -m bot run`, Slack
in HTTP mode against the fake Slack) and an app whose platform is not connected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.platforms.slack_fake_server import FakeSlack, fake_slack, mention
from tests.service.bot_process import BotProcess, free_port
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
        "model": {"loaded": True, "name": "demo"},
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
        "model": {"loaded": True, "name": "demo"},
        "database": True,
        "platforms": {"slack": False},
    }


async def test_the_health_port_is_off_unless_configured(make_app):
    app = await make_app(replies=[])
    assert app.monitor.port is None
