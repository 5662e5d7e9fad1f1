"""Command line: `python -m bot console | run | db upgrade`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bot.errors import ModelLoadError
from bot.logs import configure_logging
from bot.settings import Settings

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("console", help="chat with the bot in this terminal")
    commands.add_parser("run", help="start every platform configured in the environment")
    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade the schema to the newest version")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "db":
        from bot.storage.database import create_db_engine, upgrade_database

        upgrade_database(create_db_engine(settings.database_url))
        return 0
    if args.command == "run" and settings.configured_platforms():
        return _run_platforms(settings)
    try:
        return asyncio.run(_console(settings))
    except KeyboardInterrupt:
        return 130


async def _console(settings: Settings) -> int:
    from adapters.console import DEMO_BANNER, ConsoleAdapter
    from bot.bootstrap import bootstrap

    app = bootstrap(settings)
    console = ConsoleAdapter(
        app.manager, channel=settings.console_channel, bot_name=settings.bot_name
    )
    try:
        console.announce(f"モデル {settings.model} を読み込んでいます…")
        try:
            model = await app.start()
        except ModelLoadError as exc:
            console.announce(f"エラー: {exc.user_message}")
            return 2
        if model.is_demo:
            console.announce(DEMO_BANNER)
        await console.run()
        return 0
    finally:
        await app.close()


def _run_platforms(settings: Settings) -> int:
    platforms = ", ".join(settings.configured_platforms())
    print(
        f"{platforms} is configured, but this version has no adapter for it yet; "
        "remove the token from the environment to use the console.",
        file=sys.stderr,
    )
    return 2
