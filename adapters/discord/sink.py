"""How one reply appears in Discord: typing first, then a message that grows as the model
writes, edited at most once per interval, split into more messages past 2,000 characters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import TracebackType

import discord

from adapters.discord.split import split_reply

log = logging.getLogger(__name__)

# Model output must never ping anyone: no @everyone/@here, roles, users, or the replied user.
NO_MENTIONS = discord.AllowedMentions.none()
TYPING_REFRESH_S = 8.0  # Discord shows "typing" for about 10 s after each trigger


class DiscordReplySink:
    """A `ReplySink` answering `trigger`. Use as `async with`: typing shows from entry until
    the first text is on screen (or the block ends)."""

    def __init__(
        self,
        trigger: discord.Message,
        *,
        edit_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trigger = trigger
        self.channel = trigger.channel
        self.edit_interval_s = edit_interval_s
        self.clock = clock
        self.sent: list[discord.Message] = []
        self._shown: list[str] = []
        self._last_render = float("-inf")
        self._typing: asyncio.Task[None] | None = None
        self._finished = False

    async def __aenter__(self) -> DiscordReplySink:
        self._typing = asyncio.create_task(self._keep_typing(), name="discord-typing")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_typing()

    async def update(self, text: str) -> None:
        """Show the reply so far, unless the last edit was less than an interval ago; a skipped
        text is not lost, the next update or `finish` shows the newer whole text."""
        if self._finished or not text or self.clock() - self._last_render < self.edit_interval_s:
            return
        await self._render(text)

    async def finish(self, text: str) -> None:
        self._finished = True
        await self._render(text)

    async def _render(self, text: str) -> None:
        self._last_render = self.clock()
        chunks = split_reply(text)
        if chunks:
            await self._stop_typing()  # the text itself now shows that the bot is answering
        try:
            for index, chunk in enumerate(chunks):
                if index < len(self.sent):
                    if self._shown[index] != chunk:
                        await self.sent[index].edit(content=chunk, allowed_mentions=NO_MENTIONS)
                        self._shown[index] = chunk
                    continue
                self.sent.append(await self._send(chunk, first=index == 0))
                self._shown.append(chunk)
            # Post-processing can shorten the text (a repeated loop collapsed): drop the
            # messages the final text no longer needs.
            while len(self.sent) > len(chunks):
                self._shown.pop()
                await self.sent.pop().delete()
        except discord.HTTPException as exc:
            # A failed edit must not stop the generation; the next render tries again.
            log.warning("could not show a reply in channel %s: %s", self.channel.id, exc)

    async def _send(self, chunk: str, *, first: bool) -> discord.Message:
        if not first:
            return await self.channel.send(chunk, allowed_mentions=NO_MENTIONS)
        # Reply to the message being answered, without pinging its author, and still send if
        # that message was deleted meanwhile.
        reference = self.trigger.to_reference(fail_if_not_exists=False)
        return await self.channel.send(
            chunk, reference=reference, mention_author=False, allowed_mentions=NO_MENTIONS
        )

    async def _keep_typing(self) -> None:
        try:
            while True:
                await self.channel.typing()
                await asyncio.sleep(TYPING_REFRESH_S)
        except discord.HTTPException as exc:
            log.debug("typing indicator failed in channel %s: %s", self.channel.id, exc)

    async def _stop_typing(self) -> None:
        task, self._typing = self._typing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # unlike `await task`, never swallows our own cancel
