"""`python -m bot run` as a service manager runs it: a real process, stopped with SIGTERM, started
while a platform cannot be reached. The clients talk to a fake Discord on 127.0.0.1 (see
pointed_bot.py) and the bot answers with the demo model."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from bot.chat.replies import SHUTDOWN_NOTE
from tests.platforms.discord_fake_server import ALICE, BOT_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.platforms.discord_fake_server import message as discord_message

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0  # a loaded CI machine; an idle one needs a few seconds


def bot_env(tmp_path: Path, model_cache: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISCORD_", "SLACK_"))  # only what the test sets
    }
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "MODEL": "demo",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "MODEL_CACHE_DIR": str(model_cache),
        "LOG_LEVEL": "INFO",
        **extra,
    }


async def start_bot(tmp_path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.platforms.pointed_bot",
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stored_replies(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT text FROM messages WHERE role='assistant'")]


@pytest.fixture
async def fake() -> FakeDiscord:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.close()


@pytest.mark.parametrize(("grace", "tokens"), [("120", "300"), ("0", "1000")])
async def test_sigterm_mid_reply_finishes_or_stops_it_then_exits_0(
    tmp_path: Path, model_cache: Path, fake: FakeDiscord, grace: str, tokens: str
) -> None:
    env = bot_env(
        tmp_path,
        model_cache,
        FAKE_DISCORD_URL=f"http://127.0.0.1:{fake.port}",
        DISCORD_TOKEN="fake-token",
        DISCORD_COMMAND_GUILD_IDS=str(GUILD_ID),
        MAX_NEW_TOKENS=tokens,  # 1000: seconds of generation on the demo model
        SHUTDOWN_GRACE_SECONDS=grace,
    )
    process = await start_bot(tmp_path, env)
    try:
        await asyncio.wait_for(fake.ready.wait(), WAIT_S)
        await fake.dispatch("MESSAGE_CREATE", discord_message(ALICE, f"<@{BOT_ID}> こんにちは"))
        await fake.wait_for(lambda: fake.messages_in(CHANNEL_ID), WAIT_S)  # streaming has begun
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "SIGTERM received" in log and "shut down cleanly" in log
    assert "Traceback" not in log
    shown = "\n".join(m.content for m in fake.messages_in(CHANNEL_ID))
    (stored,) = stored_replies(tmp_path)
    assert stored.strip() and stored.replace("\n", "") in shown.replace("\n", "")
    if grace == "0":
        assert "finish=cancelled" in log
        assert shown.rstrip().endswith(SHUTDOWN_NOTE)
    else:
        # The reply ran to its own end: the token limit, or the random demo model's end-of-text
        # or an invented next turn (which one varies from run to run), never the shutdown.
        finished = re.findall(r"reply conversation=\S+ .* finish=(\w+)", log)
        assert finished and finished[0] in ("length", "eos", "stop"), log
        assert SHUTDOWN_NOTE not in shown


@pytest.mark.parametrize("platform", ["discord", "slack"])
async def test_an_unreachable_platform_at_start_up_fails_in_one_line(
    tmp_path: Path, model_cache: Path, platform: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    if platform == "discord":
        extra = {"FAKE_DISCORD_URL": url, "DISCORD_TOKEN": "fake-token"}
        name = "Discord"
    else:
        extra = {
            "FAKE_SLACK_URL": url + "/api/",
            "SLACK_BOT_TOKEN": "xoxb-fake",
            "SLACK_APP_TOKEN": "xapp-fake",
        }
        name = "Slack"
    process = await start_bot(tmp_path, bot_env(tmp_path, model_cache, **extra))
    _, stderr = await asyncio.wait_for(process.communicate(), WAIT_S)
    log = stderr.decode()
    assert process.returncode == 3, log
    assert "Traceback" not in log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert f"could not connect to {name}" in errors[0]
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in errors[0]  # says why: the refused address
