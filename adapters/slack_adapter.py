"""Entry point for `python -m bot run`: serve Slack until cancelled (see docs/SLACK.md)."""

from __future__ import annotations

import asyncio

from adapters.slack.adapter import SlackAdapter
from bot.bootstrap import App

__all__ = ["serve"]


async def serve(app: App) -> None:
    """Connect in the mode SLACK_MODE names and answer until the task is cancelled."""
    adapter = SlackAdapter(app)
    try:
        await adapter.start()
        app.monitor.register_platform("slack", adapter.is_connected)
        await asyncio.Event().wait()
    finally:
        app.monitor.unregister_platform("slack")
        await adapter.close()
