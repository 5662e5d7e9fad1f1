"""Two real bot processes (`python -m bot run`, Slack in HTTP mode) on one PostgreSQL database,
against the fake Slack Web API: what a team running two replicas behind a load balancer gets.

The load: THREADS Slack threads at once, TURNS mentions in each sent without waiting for the
replies (turns alternate between the processes), and every event delivered twice, to both
processes, 0.3 s apart (Slack's first delivery to one replica, its retry to the other).
Outcomes are read from what the processes stored (messages, claims), not from timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import create_engine, text

from adapters.slack.sink import STREAMING_MARKER
from tests.platforms.slack_fake_server import (
    TEAM,
    FakeSlack,
    event_callback,
    fake_slack,
    mention,
    signed_headers,
)
from tests.postgres_server import PostgresServer
from tests.service.bot_process import BotProcess, free_port

SECRET = "multi-process-secret"
THREADS = 6
TURNS = 3
RETRY_AFTER_S = 0.3
WAIT_S = 240.0  # every reply of the load, on a busy 2-core machine


def bot_env(fake: FakeSlack, database_url: str, model_cache: Path, port: int) -> dict[str, str]:
    return {
        "MODEL": "demo",
        "MODEL_CACHE_DIR": str(model_cache),
        "DEVICE": "cpu",
        "DTYPE": "fp32",
        "DATABASE_URL": database_url,
        "MAX_NEW_TOKENS": "8",
        "USER_RATE_LIMIT_PER_MINUTE": "0",
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_MODE": "http",
        "SLACK_HTTP_HOST": "127.0.0.1",
        "SLACK_HTTP_PORT": str(port),
        "SLACK_API_URL": fake.api_url,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with fake_slack() as slack:
        yield slack


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    return postgres.create_database()


@pytest.fixture
def bots(tmp_path: Path) -> Iterator[list[BotProcess]]:
    started: list[BotProcess] = []
    yield started
    for bot in started:
        bot.stop()


async def start_bots(
    bots: list[BotProcess],
    count: int,
    fake: FakeSlack,
    database: str,
    model_cache: Path,
    tmp: Path,
    **first_env: str,
) -> list[str]:
    """Start `count` bot processes at once on one database; returns their events URLs.
    `first_env` adds settings to the first one only."""
    ports = [free_port() for _ in range(count)]
    for i, port in enumerate(ports):
        env = {**bot_env(fake, database, model_cache, port), **(first_env if i == 0 else {})}
        bots.append(BotProcess(f"bot{i}", tmp / f"bot{i}", env).start())
    await asyncio.gather(*(bot.wait_port(port) for bot, port in zip(bots, ports, strict=True)))
    return [f"http://127.0.0.1:{port}/slack/events" for port in ports]


async def deliver(
    session: aiohttp.ClientSession, url: str, event: dict, event_id: str, retry: int = 0
) -> None:
    body = json.dumps(event_callback(event, event_id=event_id))
    headers = {**signed_headers(body, SECRET), "Content-Type": "application/json"}
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    async with session.post(url, data=body.encode(), headers=headers) as response:
        assert response.status == 200, await response.text()


def root(thread: int) -> str:
    return f"17000{thread:05d}.000100"


def history(database: str) -> dict[str, list[tuple[str, str]]]:
    """Each Slack thread's stored turns, oldest first: {thread ts: [(role, text), ...]}."""
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT c.thread_id, m.role, m.text FROM messages m "
                    "JOIN conversations c ON c.id = m.conversation_id ORDER BY m.id"
                )
            ).all()
    finally:
        engine.dispose()
    threads: dict[str, list[tuple[str, str]]] = {}
    for thread_id, role, body in rows:
        threads.setdefault(thread_id, []).append((role, body))
    return threads


def claims(database: str) -> list[tuple[str, bool]]:
    """The claimed events: (key, whether its reply is done)."""
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT key, done_at FROM claimed_events")).all()
    finally:
        engine.dispose()
    return [(key, done_at is not None) for key, done_at in rows]


def logs_of(bots: list[BotProcess]) -> str:
    return "\n".join(f"--- {bot.name}\n{bot.log()}" for bot in bots)


def final_replies(fake: FakeSlack, thread_ts: str) -> list[str]:
    """The bot's replies in a thread: one chat.postMessage starts each."""
    return [c.args["ts"] for c in fake.posts() if c.args.get("thread_ts") == thread_ts]


async def test_two_processes_answer_each_event_once_and_keep_every_thread_in_order(
    fake, database, bots, model_cache, tmp_path
):
    urls = await start_bots(bots, 2, fake, database, model_cache, tmp_path)
    sent: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def talk(thread: int) -> None:
            for turn in range(TURNS):
                ts = root(thread) if turn == 0 else f"17000{thread:05d}.{turn + 1:06d}"
                sent.append(ts)
                event = mention(
                    f"スレッド{thread}の{turn + 1}番目です。",
                    ts=ts,
                    thread_ts=None if turn == 0 else root(thread),
                )
                event_id = f"Ev{thread}x{turn}"
                # Turns alternate between the processes; the retry follows a moment later (so
                # the first delivery usually wins and both processes share the work).
                first, other = urls[turn % 2], urls[(turn + 1) % 2]

                async def retry(url: str = other, event: dict = event, event_id: str = event_id):
                    await asyncio.sleep(RETRY_AFTER_S)
                    await deliver(session, url, event, event_id, retry=1)

                await asyncio.gather(deliver(session, first, event, event_id), retry())

        await asyncio.gather(*(talk(t) for t in range(THREADS)))

    # Every message claimed and its claim marked done: the reply is stored and sent, and a
    # done claim is never taken again, so no answer can come after this.
    def all_done() -> bool:
        done = [done for _, done in claims(database)]
        return len(done) == THREADS * TURNS and all(done)

    try:
        async with asyncio.timeout(WAIT_S):
            while not all_done():
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail(f"not every turn was answered: {claims(database)}\n" + logs_of(bots))

    stored = history(database)
    logs = logs_of(bots)
    assert sorted(key for key, _ in claims(database)) == sorted(
        f"slack:{TEAM}:message:C0CHAN:{ts}" for ts in sent
    )
    assert sorted(stored) == sorted(root(t) for t in range(THREADS)), logs
    for thread in range(THREADS):
        turns = stored[root(thread)]
        # Each question is followed by its answer: never two questions or two answers in a row.
        assert [role for role, _ in turns] == ["user", "assistant"] * TURNS, (turns, logs)
        assert sorted(body for role, body in turns if role == "user") == sorted(
            f"スレッド{thread}の{turn + 1}番目です。" for turn in range(TURNS)
        )
        assert len(final_replies(fake, root(thread))) == TURNS, logs


async def test_a_process_killed_mid_reply_leaves_no_half_reply_and_blocks_nobody(
    fake, database, bots, model_cache, tmp_path
):
    # The first process writes long replies, so it is surely mid-reply when it is killed.
    urls = await start_bots(bots, 2, fake, database, model_cache, tmp_path, MAX_NEW_TOKENS="900")
    thread = root(1)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await deliver(session, urls[0], mention("長い話をして", ts=thread), "EvLong")
        # The first streamed edit: the reply is being generated, the conversation locked.
        streaming = await fake.wait_for(
            lambda: [c for c in fake.posts() if c.args.get("thread_ts") == thread], timeout=WAIT_S
        )
        assert streaming[0].args["text"].endswith(STREAMING_MARKER)
        bots[0].kill()
        await deliver(
            session,
            urls[1],
            mention("まだいますか", ts="1700000001.000200", thread_ts=thread),
            "EvAfter",
        )

    def answered() -> bool:
        return any(role == "assistant" for role, _ in history(database).get(thread, []))

    try:
        async with asyncio.timeout(WAIT_S):
            while not answered():
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail("the surviving process did not answer:\n" + logs_of(bots))
    # The killed process's claim was never marked done: it lapses after its lease, and a later
    # delivery of that event is answered by the survivor.
    assert dict(claims(database))[f"slack:{TEAM}:message:C0CHAN:{thread}"] is False
    # The killed turn left its question and no partial answer; the next turn was answered.
    assert history(database)[thread] == [
        ("user", "長い話をして"),
        ("user", "まだいますか"),
        ("assistant", history(database)[thread][2][1]),
    ]
