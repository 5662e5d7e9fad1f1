"""A fake Slack on 127.0.0.1 for end-to-end tests of the real slack-bolt / slack_sdk code.

One aiohttp server plays three parts:
- the Web API (`/api/<method>`): records every call, answers auth.test, users.info,
  apps.connections.open, chat.postMessage/update/delete;
- the Socket Mode websocket (`/socket`): sends `hello`, then envelopes the test pushes, and
  records the acknowledgements;
- response URLs (`/respond/<id>`) that slash-command follow-ups are posted to.

Every wait is bounded, so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from adapters.slack.adapter import SlackAdapter
from bot.app.bootstrap import App

TEAM = "T0TEAM"
BOT_USER = "UBOT"
BOT_ID = "BBOT"
WAIT_S = 10.0
ROOT = "1700000100.000100"  # a thread root: the first mention in most tests


@dataclass
class ApiCall:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.responses: list[dict[str, Any]] = []  # bodies posted to response URLs
        self.responded_at: list[float] = []
        self.acks: dict[str, tuple[float, dict[str, Any]]] = {}  # envelope id -> (time, ack)
        self.users: dict[str, dict[str, Any]] = {}  # users.info answers, by user id
        self.errors: dict[str, str] = {}  # method -> error code it answers with
        self.url = ""
        self._changed = asyncio.Condition()
        self._socket: web.WebSocketResponse | None = None
        self._sent: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._envelopes = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # Lifecycle

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._websocket)
        app.router.add_post("/respond/{id}", self._respond)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def add_user(self, user_id: str, name: str, **flags: bool) -> None:
        self.users[user_id] = {
            "id": user_id,
            "name": name.lower(),
            "real_name": name,
            "profile": {"display_name": name, "real_name": name},
            **flags,
        }

    # Waiting

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT_S) -> Any:
        """Wait until `predicate()` is truthy (re-checked whenever the fake sees traffic)."""
        async with asyncio.timeout(timeout), self._changed:
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # Queries

    def api(self, *methods: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method in methods]

    def posts(self, channel: str | None = None) -> list[ApiCall]:
        return [
            c
            for c in self.api("chat.postMessage")
            if channel is None or c.args.get("channel") == channel
        ]

    def message_text(self, ts: str) -> str | None:
        """What the message `ts` shows now, after every update."""
        text = None
        for call in self.api("chat.postMessage", "chat.update"):
            if call.args.get("ts") == ts:
                text = call.args.get("text")
        return text

    def shown(self, ts: str) -> list[str]:
        """Every text message `ts` has shown, in order."""
        return [
            c.args["text"]
            for c in self.api("chat.postMessage", "chat.update")
            if c.args.get("ts") == ts
        ]

    # Socket Mode

    @property
    def connected(self) -> bool:
        return self._socket is not None

    async def wait_connected(self) -> None:
        await self.wait_for(lambda: self.connected)

    async def send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Push one envelope (`events_api`, `slash_commands`); returns its envelope id."""
        assert self._socket is not None, "no Socket Mode client connected"
        envelope_id = f"env-{next(self._envelopes)}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        self._sent[envelope_id] = time.monotonic()
        await self._socket.send_str(json.dumps(envelope))
        return envelope_id

    async def wait_ack(self, envelope_id: str, timeout: float = WAIT_S) -> tuple[float, dict]:
        """The acknowledgement: seconds from sending to acking, and the ack itself."""
        acked_at, ack = await self.wait_for(lambda: self.acks.get(envelope_id), timeout)
        return acked_at - self._sent[envelope_id], ack

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        self._socket = socket
        await self._notify()
        async for message in socket:
            if message.type == aiohttp.WSMsgType.TEXT:
                ack = json.loads(message.data)
                self.acks[ack["envelope_id"]] = (time.monotonic(), ack)
                await self._notify()
        if self._socket is socket:
            self._socket = None
            await self._notify()
        return socket

    # Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            args.update(await request.post())
        call = ApiCall(method, args)
        self.calls.append(call)
        body = self._answer(call, request.headers.get("Authorization", ""))
        await self._notify()
        return web.json_response(body)

    def _answer(self, call: ApiCall, authorization: str) -> dict[str, Any]:
        args = call.args
        if call.method in self.errors:
            return {"ok": False, "error": self.errors[call.method]}
        if call.method == "auth.test":
            return {"ok": True, "user_id": BOT_USER, "bot_id": BOT_ID, "team_id": TEAM}
        if call.method == "apps.connections.open":
            if not authorization.startswith("Bearer xapp-"):
                return {"ok": False, "error": "not_allowed_token_type"}
            return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}
        if call.method == "users.info":
            user = self.users.get(args.get("user", ""))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if call.method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            args["ts"] = ts  # recorded with the call, so tests can follow the message
            return {
                "ok": True,
                "channel": args["channel"],
                "ts": ts,
                "message": {"text": args["text"]},
            }
        if call.method in ("chat.update", "chat.delete"):
            return {"ok": True, "channel": args["channel"], "ts": args["ts"]}
        return {"ok": False, "error": "unknown_method"}

    async def _respond(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        self.responded_at.append(time.monotonic())
        await self._notify()
        return web.json_response({"ok": True})


# Payloads, as Slack sends them


def event_callback(event: dict[str, Any], *, event_id: str = "Ev1") -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "api_app_id": "A0APP",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1700000000,
        "event": event,
    }


def mention(
    text: str,
    *,
    ts: str,
    channel: str = "C0CHAN",
    user: str = "U0ALICE",
    thread_ts: str | None = None,
) -> dict[str, Any]:
    event = {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message(
    text: str,
    *,
    ts: str,
    channel: str = "C0CHAN",
    user: str = "U0ALICE",
    thread_ts: str | None = None,
    channel_type: str = "channel",
    **extra: Any,
) -> dict[str, Any]:
    event = {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "channel_type": channel_type,
        "event_ts": ts,
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def slash_command(
    text: str, *, user: str, response_url: str, channel: str = "C0CHAN"
) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM,
        "team_domain": "example",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": "/chat",
        "text": text,
        "api_app_id": "A0APP",
        "response_url": response_url,
        "trigger_id": "1.2.3",
    }


def signed_headers(body: str, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs an HTTP request with (v0, HMAC-SHA256 over `v0:ts:body`)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{timestamp}:{body}".encode()
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def form_body(fields: dict[str, str]) -> str:
    return urllib.parse.urlencode(fields)


@asynccontextmanager
async def running_socket_mode(
    app: App, fake: FakeSlack, *, update_interval_s: float = 0.05
) -> AsyncIterator[SlackAdapter]:
    """A SlackAdapter in Socket Mode, connected to `fake`; closed (bounded) on exit."""
    adapter = SlackAdapter(app, api_base_url=fake.api_url, update_interval_s=update_interval_s)
    try:
        async with asyncio.timeout(WAIT_S):
            await adapter.start_socket_mode()
            await fake.wait_connected()
        yield adapter
    finally:
        async with asyncio.timeout(WAIT_S):
            await adapter.close()


async def settle(adapter: SlackAdapter) -> None:
    """Let listeners hand their work over, then wait for every reply and command to finish."""
    await asyncio.sleep(0.05)
    async with asyncio.timeout(WAIT_S):
        await adapter.wait_idle()


# Set-up and steps shared by the end-to-end test modules


@asynccontextmanager
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A started FakeSlack that knows three people: アリス, ボブ and 管理者 (UADMIN)."""
    slack = await FakeSlack().start()
    slack.add_user("U0ALICE", "アリス")
    slack.add_user("U0BOB", "ボブ")
    slack.add_user("UADMIN", "管理者")
    try:
        yield slack
    finally:
        await slack.close()


@asynccontextmanager
async def socket_mode_apps(
    make_app: Callable[..., Any], fake: FakeSlack
) -> AsyncIterator[Callable[..., Any]]:
    """Yields `start`: `await start(replies, **settings)` gives (app, adapter), the adapter in
    Socket Mode against `fake`, the app's model playing back `replies`. UADMIN is an admin."""
    async with AsyncExitStack() as stack:

        async def start(
            replies: list[str], *, delay_s: float = 0.0, eos: bool = True, **settings: Any
        ) -> tuple[App, SlackAdapter]:
            app = await make_app(
                replies,
                script_kwargs={"delay_s": delay_s, "eos": eos},
                slack_bot_token="xoxb-test",
                slack_app_token="xapp-test",
                **{"slack_admin_user_ids": "UADMIN", **settings},
            )
            adapter = await stack.enter_async_context(running_socket_mode(app, fake))
            return app, adapter

        yield start


async def deliver(fake: FakeSlack, event: dict, *, event_id: str = "Ev1", **retry: Any) -> float:
    """Send an Events API envelope; returns how long the acknowledgement took."""
    envelope = await fake.send_envelope(
        "events_api", event_callback(event, event_id=event_id), **retry
    )
    elapsed, ack = await fake.wait_ack(envelope)
    assert ack == {"envelope_id": envelope}
    return elapsed


async def replied(fake: FakeSlack, adapter: SlackAdapter, count: int = 1) -> list:
    await fake.wait_for(lambda: len(fake.posts()) >= count)
    await settle(adapter)
    return fake.posts()
