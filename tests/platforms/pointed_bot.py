"""`python -m tests.platforms.pointed_bot ARGS…` is `python -m bot ARGS…` with the Discord and
Slack clients pointed at local URLs, as the in-process platform tests point them with
monkeypatch: FAKE_DISCORD_URL (REST under /api/v10, gateway at /gateway) and FAKE_SLACK_URL (the
Web API). The bot runs unchanged otherwise, as a real process that signals can reach."""

from __future__ import annotations

import functools
import os
import sys

import yarl


def point_clients() -> None:
    discord_url = os.environ.get("FAKE_DISCORD_URL")
    if discord_url:
        import discord.gateway
        import discord.http

        discord.http.Route.BASE = f"{discord_url}/api/v10"
        gateway = yarl.URL(discord_url.replace("http://", "ws://", 1) + "/gateway")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
    slack_url = os.environ.get("FAKE_SLACK_URL")
    if slack_url:
        import adapters.slack.run

        adapters.slack.run.SlackAdapter = functools.partial(  # type: ignore[misc]
            adapters.slack.run.SlackAdapter, api_base_url=slack_url
        )


if __name__ == "__main__":
    from bot.cli import main

    point_clients()
    sys.exit(main(sys.argv[1:]))
