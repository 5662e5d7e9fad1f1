"""Entry point for `python -m bot run`: serve Slack until cancelled (see docs/SLACK.md)."""

from __future__ import annotations

import asyncio

import aiohttp

from adapters.slack.adapter import SlackAdapter
from bot.app.bootstrap import App
from bot.errors import PlatformUnreachable

__all__ = ["serve"]


async def serve(app: App) -> None:
    """Connect in the mode SLACK_MODE names and answer until the task is cancelled. Raises
    PlatformUnreachable when Slack cannot be reached at start; after that, slack_sdk's Socket
    Mode client reconnects a dropped connection itself (checking every 10 seconds) and logs
    it."""
    adapter = SlackAdapter(app)
    try:
        try:
            await adapter.start()
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise PlatformUnreachable("Slack", exc) from exc
        app.monitor.register_platform("slack", adapter.is_connected)
        await asyncio.Event().wait()
    finally:
        app.monitor.unregister_platform("slack")
        await adapter.close()
