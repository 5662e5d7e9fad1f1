"""What the adapter remembers about Slack: people (users.info, cached) and the threads the bot
has joined (stored in the database, so they survive a restart and are shared by processes)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.messages import ConversationKey

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackUser:
    id: str
    name: str
    is_workspace_admin: bool = False  # a workspace admin or owner
    found: bool = True  # False: users.info failed and `name` is only the id


class UserDirectory:
    """users.info, cached for `ttl_s` (so a changed name or admin flag shows up within it)."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl_s: float = 600.0,
        max_entries: int = 5000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, SlackUser]] = OrderedDict()

    async def get(self, user_id: str) -> SlackUser:
        cached = self._cache.get(user_id)
        if cached and self.clock() - cached[0] < self.ttl_s:
            return cached[1]
        user = await self._fetch(user_id)
        self._cache[user_id] = (self.clock(), user)
        self._cache.move_to_end(user_id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return user

    async def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names of the users Slack could tell us about."""
        users = await asyncio.gather(*(self.get(user_id) for user_id in user_ids))
        return {user.id: user.name for user in users if user.found}

    async def _fetch(self, user_id: str) -> SlackUser:
        try:
            response = await self.client.users_info(user=user_id)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            # Missing users:read scope or a hiccup: a plain id is a fine name, and nobody is
            # made an admin by an error. Cached like a success so a broken scope is not hammered.
            log.warning("users.info failed for %s: %s", user_id, exc)
            return SlackUser(user_id, user_id, found=False)
        data = response.get("user") or {}
        profile = data.get("profile") or {}
        name = (
            profile.get("display_name")
            or profile.get("real_name")
            or data.get("real_name")
            or data.get("name")
            or user_id
        )
        admin = any(data.get(flag) for flag in ("is_admin", "is_owner", "is_primary_owner"))
        return SlackUser(user_id, name, admin)


ThreadCheck = Callable[[ConversationKey], Awaitable[bool]]
ThreadJoin = Callable[[ConversationKey], Awaitable[None]]


class JoinedThreads:
    """Threads the bot answered in, so plain replies there continue the conversation.

    One database row per thread, shared by every bot process on the database: a thread another
    process joined is found there, and joins never overwrite each other. A thread is never left,
    so the ones known here are cached; the others are looked up on each plain reply.
    """

    def __init__(self, is_joined: ThreadCheck, join: ThreadJoin, *, cached: int = 10_000) -> None:
        self._is_joined = is_joined
        self._join = join
        self.cached = cached
        self._known: OrderedDict[ConversationKey, None] = OrderedDict()

    @staticmethod
    def key(team_id: str, channel: str, thread_ts: str) -> ConversationKey:
        return ConversationKey("slack", team_id, channel, thread_ts)

    async def contains(self, team_id: str, channel: str, thread_ts: str) -> bool:
        key = self.key(team_id, channel, thread_ts)
        if key in self._known:
            self._known.move_to_end(key)
            return True
        if await self._is_joined(key):
            self._remember(key)
            return True
        return False

    async def join(self, team_id: str, channel: str, thread_ts: str) -> None:
        key = self.key(team_id, channel, thread_ts)
        if key not in self._known:
            await self._join(key)
        self._remember(key)

    def _remember(self, key: ConversationKey) -> None:
        self._known[key] = None
        self._known.move_to_end(key)
        while len(self._known) > self.cached:
            self._known.popitem(last=False)
