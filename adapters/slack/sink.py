"""Shows one reply in Slack: posted on the first update, edited in place at a throttled rate,
split across messages when it outgrows one, and left holding exactly the clean final text."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.text import TEXT_LIMIT_BYTES, render_messages

log = logging.getLogger(__name__)

STREAMING_MARKER = " …"  # shown while the reply is still being written
# Model output must never notify anyone; with link_names off, only <!…>/<@…> markup could,
# and escaping removes that. Unfurling a link the model made up helps nobody.
POST_OPTIONS = {"link_names": False, "unfurl_links": False, "unfurl_media": False}


@dataclass
class _Posted:
    ts: str
    text: str  # as last sent


class SlackReplySink:
    """A `ReplySink` for one reply in one channel (and thread)."""

    def __init__(
        self,
        client: AsyncWebClient,
        channel: str,
        thread_ts: str | None,
        *,
        interval_s: float = 1.0,
        limit: int = TEXT_LIMIT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval_s = interval_s
        self.limit = limit
        self.clock = clock
        self.posted: list[_Posted] = []
        self._last_shown = float("-inf")

    async def update(self, text: str) -> None:
        now = self.clock()
        if now - self._last_shown < self.interval_s:
            return  # Slack allows about one edit a second; the next update shows this text
        self._last_shown = now
        try:
            await self._show(render_messages(text + STREAMING_MARKER, self.limit), final=False)
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("streaming update failed in %s: %s", self.channel, exc)

    async def finish(self, text: str) -> None:
        await self._show(render_messages(text, self.limit) or ["…"], final=True)

    async def _show(self, messages: list[str], *, final: bool) -> None:
        for index, message in enumerate(messages):
            if index >= len(self.posted):
                self.posted.append(_Posted(await self._post(message), message))
            elif self.posted[index].text != message:
                await self._edit(index, message, final=final)
        if final:
            # Post-processing may have shortened what was streamed: drop the leftovers.
            for extra in self.posted[len(messages) :]:
                try:
                    await self.client.chat_delete(channel=self.channel, ts=extra.ts)
                except SlackApiError as exc:
                    log.warning("could not delete a leftover message in %s: %s", self.channel, exc)
            del self.posted[len(messages) :]

    async def _post(self, text: str) -> str:
        response = await self.client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=text, **POST_OPTIONS
        )
        return str(response["ts"])

    async def _edit(self, index: int, text: str, *, final: bool) -> None:
        posted = self.posted[index]
        try:
            await self.client.chat_update(
                channel=self.channel, ts=posted.ts, text=text, link_names=False
            )
        except SlackApiError as exc:
            if not final:
                raise
            # Someone deleted the streamed message (or it cannot be edited): the final text
            # still has to arrive.
            log.warning("chat.update failed in %s (%s); posting the reply anew", self.channel, exc)
            posted.ts = await self._post(text)
        posted.text = text
