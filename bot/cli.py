"""Command line: `python -m bot console | run | models | bench | persona … | db upgrade`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bot.errors import ConfigError, ModelLoadError
from bot.logs import configure_logging
from bot.settings import Settings

log = logging.getLogger("bot")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "persona":  # prepare corpora and train LoRA personas
        from persona.cli import main as persona_main

        return persona_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("console", help="chat with the bot in this terminal")
    commands.add_parser("run", help="start every platform configured in the environment")
    commands.add_parser("persona", help="persona tools: prepare nucc …, train … (see --help)")
    commands.add_parser("models", help="list the named models with size and memory estimates")
    bench = commands.add_parser("bench", help="measure many channels at once (CPU benchmark)")
    bench.add_argument("--channels", default="1,4,8,16", help="comma-separated channel counts")
    bench.add_argument("--new-tokens", type=int, default=64)
    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade the schema to the newest version")
    args = parser.parse_args(argv)

    if args.command == "models":
        from bot.registry import format_catalogue

        print(format_catalogue())
        return 0
    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "db":
        from bot.storage.database import create_db_engine, upgrade_database

        upgrade_database(create_db_engine(settings.database_url))
        return 0
    if args.command == "bench":
        from bot.bench import run_benchmark

        counts = tuple(int(c) for c in args.channels.split(","))
        print(asyncio.run(run_benchmark(settings.model_cache_dir, counts, args.new_tokens)))
        return 0
    serve = _platforms if args.command == "run" and settings.configured_platforms() else _console
    try:
        return asyncio.run(serve(settings))
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


async def _platforms(settings: Settings) -> int:
    """Serve every configured platform until one stops or the process is interrupted."""
    import importlib

    from bot.bootstrap import bootstrap

    app = bootstrap(settings)
    try:
        try:
            await app.start()
        except ModelLoadError as exc:
            print(f"error: {exc.user_message}", file=sys.stderr)
            return 2
        servers = []
        for platform in settings.configured_platforms():
            # Each adapter module exposes `async def serve(app) -> None`.
            module = importlib.import_module(f"adapters.{platform}_adapter")
            servers.append(asyncio.create_task(module.serve(app), name=platform))
        log.info("serving %s", ", ".join(settings.configured_platforms()))
        try:
            done, _ = await asyncio.wait(servers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in servers:
                task.cancel()
            # Let adapters disconnect before the worker and database close.
            await asyncio.gather(*servers, return_exceptions=True)
        for task in done:
            if not task.cancelled() and isinstance(task.exception(), ConfigError):
                print(f"error: {task.exception()}", file=sys.stderr)
                return 2
            task.result()
        return 0
    finally:
        await app.close()
