"""A stand-in for Discord on 127.0.0.1: the REST routes discord.py calls and the gateway
websocket (HELLO, IDENTIFY, READY, GUILD_CREATE, then whatever events a test dispatches).

It records every REST request and keeps the messages the bot posts, with each version of
their text, so tests can read what a person in the channel would have seen. Payload builders
give realistic raw Discord dicts for the tests to send.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

API = "/api/v10"
BODY = web.RequestKey("body", object)
TIMESTAMP = "2025-01-01T00:00:00.000000+00:00"

APP_ID = 1100000000000000001
BOT_ID = 1100000000000000002
GUILD_ID = 1200000000000000001
CHANNEL_ID = 1300000000000000001  # #general
OTHER_CHANNEL_ID = 1300000000000000002  # #random
THREAD_ID = 1300000000000000003  # a thread in #general
DM_CHANNEL_ID = 1300000000000000009
ADMIN_ROLE_ID = 1400000000000000001
MEMBER_ROLE_ID = 1400000000000000002
BOT_ROLE_ID = 1400000000000000003  # the role Discord makes for the bot when it is invited
OWNER_ID = 1500000000000000000
MESSAGE_CONTENT = 1 << 15  # the privileged intent's bit


def user(user_id: int, name: str, *, bot: bool = False, global_name: str | None = None) -> dict:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": global_name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
    }


BOT_USER = user(BOT_ID, "nihongo-bot", bot=True)
ALICE = user(1500000000000000001, "alice", global_name="アリス")  # holds the admin role
BOB = user(1500000000000000002, "bob", global_name="ボブ")  # an ordinary member
CAROL = user(1500000000000000003, "carol", global_name="キャロル")
OTHER_BOT = user(1500000000000000004, "otherbot", bot=True)
PEOPLE = {person["id"]: person for person in (BOT_USER, ALICE, BOB, CAROL, OTHER_BOT)}
NICKS = {ALICE["id"]: "アリス管理人", BOB["id"]: None, CAROL["id"]: "キャロちゃん"}
ROLES = {ALICE["id"]: [str(ADMIN_ROLE_ID)], BOB["id"]: [str(MEMBER_ROLE_ID)]}


def member(person: dict, *, with_user: bool = False, permissions: str | None = None) -> dict:
    data: dict[str, Any] = {
        "roles": ROLES.get(person["id"], []),
        "nick": NICKS.get(person["id"]),
        "joined_at": TIMESTAMP,
        "deaf": False,
        "mute": False,
        "flags": 0,
    }
    if with_user:
        data["user"] = person
    if permissions is not None:
        data["permissions"] = permissions
    return data


def role(role_id: int, name: str, permissions: str, **extra: Any) -> dict:
    return {
        "id": str(role_id),
        "name": name,
        "permissions": permissions,
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": True,
        "flags": 0,
        **extra,
    }


def text_channel(channel_id: int, name: str) -> dict:
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(GUILD_ID),
        "name": name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
    }


def thread_channel(thread_id: int, parent_id: int, name: str) -> dict:
    return {
        "id": str(thread_id),
        "type": 11,
        "guild_id": str(GUILD_ID),
        "parent_id": str(parent_id),
        "owner_id": ALICE["id"],
        "name": name,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "message_count": 0,
        "member_count": 1,
        "thread_metadata": {
            "archived": False,
            "auto_archive_duration": 1440,
            "archive_timestamp": TIMESTAMP,
            "locked": False,
        },
        "flags": 0,
    }


def guild() -> dict:
    return {
        "id": str(GUILD_ID),
        "name": "テストサーバー",
        "icon": None,
        "owner_id": str(OWNER_ID),
        "unavailable": False,
        "large": False,
        "member_count": 5,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [
            role(GUILD_ID, "@everyone", "1024"),  # view channels only
            role(ADMIN_ROLE_ID, "管理者", "8"),  # Administrator
            role(MEMBER_ROLE_ID, "メンバー", "3072"),
            role(BOT_ROLE_ID, "nihongo-bot", "3072", managed=True, tags={"bot_id": str(BOT_ID)}),
        ],
        "channels": [
            text_channel(CHANNEL_ID, "general"),
            text_channel(OTHER_CHANNEL_ID, "random"),
        ],
        "threads": [thread_channel(THREAD_ID, CHANNEL_ID, "雑談スレッド")],
        "members": [member(BOT_USER, with_user=True) | {"roles": [str(BOT_ROLE_ID)]}],
        "voice_states": [],
        "presences": [],
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "preferred_locale": "ja",
        "system_channel_flags": 0,
        "joined_at": TIMESTAMP,
    }


_message_ids = itertools.count(1600000000000000001)


def message(
    author: dict,
    content: str,
    *,
    channel_id: int = CHANNEL_ID,
    dm: bool = False,
    mentions: tuple[dict, ...] | None = None,
    role_mentions: tuple[int, ...] | None = None,
    replying_to: dict | None = None,
    webhook_id: int | None = None,
    type: int = 0,
) -> dict:
    """A MESSAGE_CREATE payload as Discord sends it: unless given, `mentions` and
    `role_mentions` are read from the <@id> and <@&id> markup in `content`, and in a guild each
    mentioned user carries their member data."""
    if mentions is None:
        found = re.findall(r"<@!?(\d+)>", content)
        mentions = tuple(PEOPLE[i] for i in dict.fromkeys(found) if i in PEOPLE)
    if role_mentions is None:
        role_mentions = tuple(int(i) for i in re.findall(r"<@&(\d+)>", content))
    data: dict[str, Any] = {
        "id": str(next(_message_ids)),
        "channel_id": str(DM_CHANNEL_ID if dm else channel_id),
        "author": author,
        "content": content,
        "timestamp": TIMESTAMP,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [person if dm else person | {"member": member(person)} for person in mentions],
        "mention_roles": [str(r) for r in role_mentions],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 19 if replying_to else type,
        "flags": 0,
    }
    if not dm:
        data["guild_id"] = str(GUILD_ID)
        data["member"] = member(author)
    if webhook_id is not None:
        data["webhook_id"] = str(webhook_id)
    if replying_to is not None:
        data["message_reference"] = {
            "type": 0,
            "message_id": replying_to["id"],
            "channel_id": replying_to["channel_id"],
            **({"guild_id": str(GUILD_ID)} if not dm else {}),
        }
        data["referenced_message"] = replying_to
    return data


_interaction_ids = itertools.count(1700000000000000001)


def interaction(
    person: dict,
    subcommand: str,
    options: dict[str, Any] | None = None,
    *,
    administrator: bool = False,
    channel: dict | None = None,
    dm: bool = False,
    focused: str | None = None,
) -> dict:
    """An INTERACTION_CREATE payload for `/chat <subcommand>`; with `focused`, the autocomplete
    request Discord sends while that option is being typed."""
    option_list = []
    for name, value in (options or {}).items():
        kind = {bool: 5, int: 4, float: 10}.get(type(value), 3)
        option = {"name": name, "type": kind, "value": value}
        if name == focused:
            option["focused"] = True
        option_list.append(option)
    interaction_id = next(_interaction_ids)
    data: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(APP_ID),
        "type": 4 if focused else 2,
        "token": f"token-{interaction_id}",
        "version": 1,
        "locale": "ja",
        "app_permissions": "3072",
        "entitlements": [],
        "attachment_size_limit": 10 * 1024 * 1024,
        "data": {
            "id": "1800000000000000001",
            "name": "chat",
            "type": 1,
            "options": [{"name": subcommand, "type": 1, "options": option_list}],
        },
    }
    if dm:
        data["channel"] = {"id": str(DM_CHANNEL_ID), "type": 1, "recipients": [person]}
        data["user"] = person
        data["context"] = 1
        return data
    everything = str((1 << 41) - 1)
    data |= {
        "guild_id": str(GUILD_ID),
        "guild_locale": "ja",
        "channel": channel or text_channel(CHANNEL_ID, "general"),
        "member": member(
            person, with_user=True, permissions=everything if administrator else "3072"
        ),
        "context": 0,
        "authorizing_integration_owners": {"0": str(GUILD_ID)},
    }
    return data


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body only when Content-Type is exactly "application/json".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


@dataclass
class Request:
    method: str
    path: str  # without the /api/v10 prefix
    body: Any
    at: float  # time.monotonic() when it arrived


@dataclass
class PostedMessage:
    """A message the bot posted, with each text it showed (creation, then every edit)."""

    payload: dict
    via: str  # "channel", "interaction" (a response) or "webhook" (a follow-up)
    versions: list[str] = field(default_factory=list)
    edit_times: list[float] = field(default_factory=list)
    deleted: bool = False

    @property
    def content(self) -> str:
        return self.versions[-1]


class FakeDiscord:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.unhandled: list[str] = []
        self.posted: dict[str, PostedMessage] = {}  # by message id, in posting order
        self.identify: dict | None = None
        self.accepted_token: str | None = None  # when set, any other token is refused (401)
        self.message_content_enabled = True  # the Developer Portal switch (else close 4014)
        self._interaction_channels: dict[str, str] = {}  # by interaction token
        self.ready = asyncio.Event()  # READY and GUILD_CREATE are sent
        self._changed = asyncio.Condition()
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self._ids = itertools.count(1900000000000000001)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- what tests call -----------------------------------------------------------------

    async def dispatch(self, event: str, data: dict) -> None:
        """Send one gateway event to the connected bot."""
        assert self._ws is not None, "the bot is not connected"
        if event == "INTERACTION_CREATE":  # responses and follow-ups land in its channel
            self._interaction_channels[data["token"]] = data["channel"]["id"]
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Wait until `predicate()` is truthy (checked after every request); return its value."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def requests_to(self, method: str, path_end: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_end)]

    def messages_in(self, channel_id: int) -> list[PostedMessage]:
        return [
            m
            for m in self.posted.values()
            if m.via == "channel" and m.payload["channel_id"] == str(channel_id) and not m.deleted
        ]

    def callbacks(self) -> list[dict]:
        """Interaction responses (type 4 message, 5 deferred, 8 autocomplete), in order."""
        return [r.body for r in self.requests if r.path.endswith("/callback")]

    def followups(self) -> list[dict]:
        return [
            r.body for r in self.requests if r.method == "POST" and r.path.startswith("/webhooks/")
        ]

    # --- REST ----------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        body = await request.json() if request.can_read_body else None
        request[BODY] = body
        path = request.path.removeprefix(API)
        self.requests.append(Request(request.method, path, body, time.monotonic()))
        try:
            return await handler(request)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        method, path = request.method, request.path.removeprefix(API)
        body = request[BODY]
        parts = path.strip("/").split("/")
        if (method, path) == ("GET", "/users/@me"):
            if self.accepted_token and request.headers.get("Authorization") != (
                f"Bot {self.accepted_token}"
            ):
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            return _json(BOT_USER)
        if (method, path) == ("GET", "/oauth2/applications/@me"):
            return _json(self._application())
        if method == "GET" and path in ("/gateway", "/gateway/bot"):
            limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
            return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})
        if method == "PUT" and parts[0] == "applications" and parts[-1] == "commands":
            guild_id = parts[3] if len(parts) == 5 else None
            return _json([self._command(c, guild_id) for c in body])
        if parts[0] == "channels":
            return self._channel_route(method, parts, body)
        if method == "POST" and parts[0] == "interactions" and parts[-1] == "callback":
            return _json(self._interaction_callback(parts[1], parts[2], body))
        if parts[0] == "webhooks" and len(parts) >= 3:
            # Follow-ups (POST) and edits of the original response (PATCH .../@original).
            posted = self._post(self._interaction_channels[parts[2]], body, via="webhook")
            return _json(posted.payload)
        self.unhandled.append(f"{method} {path}")
        return _json({"message": "Unknown route", "code": 0}, status=404)

    def _channel_route(self, method: str, parts: list[str], body: Any) -> web.StreamResponse:
        channel_id = parts[1]
        if method == "POST" and parts[2:] == ["typing"]:
            return web.Response(status=204)
        if method == "POST" and parts[2:] == ["messages"]:
            return _json(self._post(channel_id, body, via="channel").payload)
        if len(parts) == 4 and parts[2] == "messages":
            posted = self.posted.get(parts[3])
            if posted is None:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if method == "PATCH":
                posted.versions.append(body["content"])
                posted.edit_times.append(time.monotonic())
                posted.payload["content"] = body["content"]
                return _json(posted.payload)
            if method == "DELETE":
                posted.deleted = True
                return web.Response(status=204)
        if method == "GET" and len(parts) == 2:
            if channel_id == str(THREAD_ID):
                return _json(thread_channel(THREAD_ID, CHANNEL_ID, "雑談スレッド"))
            return _json(text_channel(int(channel_id), "channel"))
        self.unhandled.append(f"{method} /{'/'.join(parts)}")
        return _json({"message": "Unknown route", "code": 0}, status=404)

    def _post(self, channel_id: str, body: dict, *, via: str) -> PostedMessage:
        payload = {
            "id": str(next(self._ids)),
            "channel_id": channel_id,
            "author": BOT_USER,
            "content": body.get("content") or "",
            "timestamp": TIMESTAMP,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 19 if body.get("message_reference") else 0,
            "flags": body.get("flags") or 0,
        }
        posted = PostedMessage(payload, via, [payload["content"]], [time.monotonic()])
        self.posted[payload["id"]] = posted
        return posted

    def _interaction_callback(self, interaction_id: str, token: str, body: dict) -> dict:
        kind = body["type"]
        data = body.get("data") or {}
        answer: dict[str, Any] = {
            "interaction": {
                "id": interaction_id,
                "type": 2,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool((data.get("flags") or 0) & 64),
            }
        }
        if kind == 4:
            posted = self._post(self._interaction_channels[token], data, via="interaction")
            answer["interaction"]["response_message_id"] = posted.payload["id"]
            answer["resource"] = {"type": 4, "message": posted.payload}
        return answer

    def _application(self) -> dict:
        return {
            "id": str(APP_ID),
            "name": "nihongo-bot",
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": user(OWNER_ID, "owner"),
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "bot": BOT_USER,
        }

    def _command(self, command: dict, guild_id: str | None) -> dict:
        return {
            "id": str(next(self._ids)),
            "application_id": str(APP_ID),
            "version": "1",
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            **({"guild_id": guild_id} if guild_id else {}),
            **command,
        }

    # --- gateway -------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            if payload["op"] == 1:  # heartbeat
                await ws.send_str(json.dumps({"op": 11}))
            elif payload["op"] == 2:  # identify
                self.identify = payload["d"]
                if payload["d"]["intents"] & MESSAGE_CONTENT and not self.message_content_enabled:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                await self.dispatch("READY", self._ready_payload())
                await self.dispatch("GUILD_CREATE", guild())
                self.ready.set()
        return ws

    def _ready_payload(self) -> dict:
        return {
            "v": 10,
            "user": BOT_USER,
            "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
            # Discord echoes a sharded client's [shard_id, num_shards] from IDENTIFY.
            **(
                {"shard": self.identify["shard"]}
                if self.identify and "shard" in self.identify
                else {}
            ),
        }
