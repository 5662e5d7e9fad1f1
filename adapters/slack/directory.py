"""What the adapter remembers about Slack: people (users.info, cached) and the threads the bot
has joined (kept in the bot's key/value state so they survive a restart)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

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


LoadState = Callable[[str], Awaitable[str | None]]
SaveState = Callable[[str, str], Awaitable[None]]


class JoinedThreads:
    """Threads the bot answered in, so plain replies there continue the conversation.

    Stored per channel as a JSON list of thread timestamps (the newest `per_channel`), under
    one state key per channel; channels are loaded on first use and cached.
    """

    def __init__(
        self,
        load: LoadState,
        save: SaveState,
        *,
        per_channel: int = 500,
        cached_channels: int = 256,
    ) -> None:
        self._load = load
        self._save = save
        self.per_channel = per_channel
        self.cached_channels = cached_channels
        self._channels: OrderedDict[str, list[str]] = OrderedDict()
        self._lock = asyncio.Lock()

    @staticmethod
    def state_key(team_id: str, channel: str) -> str:
        return f"slack:threads:{team_id}:{channel}"

    async def contains(self, team_id: str, channel: str, thread_ts: str) -> bool:
        return thread_ts in await self._threads(team_id, channel)

    async def join(self, team_id: str, channel: str, thread_ts: str) -> None:
        threads = await self._threads(team_id, channel)
        if thread_ts in threads:
            return
        threads.append(thread_ts)
        del threads[: -self.per_channel]
        # Serialised now, saved in call order on the one database thread: the last save wins
        # and holds every join before it.
        await self._save(self.state_key(team_id, channel), json.dumps(threads))

    async def _threads(self, team_id: str, channel: str) -> list[str]:
        key = self.state_key(team_id, channel)
        async with self._lock:  # one load per channel, even when two events race
            threads = self._channels.get(key)
            if threads is None:
                threads = _parse(await self._load(key))
                self._channels[key] = threads
            self._channels.move_to_end(key)
            while len(self._channels) > self.cached_channels:
                self._channels.popitem(last=False)
            return threads


def _parse(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        threads = json.loads(value)
    except ValueError:
        log.warning("ignored unreadable joined-thread state: %r", value[:80])
        return []
    return [str(ts) for ts in threads] if isinstance(threads, list) else []
