"""Command line: `python -m bot console | run | models | bench | convert | persona … | db upgrade`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from bot.app.lifecycle import StopSignals
from bot.app.logs import configure_logging
from bot.app.settings import GROUPS, Settings, fields_in, settings_help
from bot.errors import ConfigError, ModelLoadError, PlatformUnreachable

if TYPE_CHECKING:
    from bot.app.bootstrap import App

log = logging.getLogger("bot")
# The platforms `run` serves, each a package exposing `async def serve(app) -> None`; imported
# only when configured, so a bot without Discord never loads discord.py.
PLATFORMS = {"discord": "adapters.discord", "slack": "adapters.slack"}
CONSOLE_END_BOUND_S = 5.0
# The settings each verb reads, which its `--help` lists. `run` without a configured platform
# is the console; `models` reads none; `persona` is parsed by persona.cli, which has its own help.
CONSOLE_SETTINGS = fields_in(
    "engine", "model", "serving", "generation", "conversations", "console", "health", "logging"
)
VERB_SETTINGS = {
    "console": CONSOLE_SETTINGS,
    "run": fields_in(*GROUPS),
    "convert": ["prompt_format", "model_cache_dir", "hf_token", "log_level"],
    "bench": ["model_cache_dir", "log_level"],  # its runs set their own model, batch and sampling
    "db": ["database_url", "log_level"],
}
SETTINGS_SOURCE = "Settings are read from the environment or .env; .env.example documents each."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "persona":  # prepare corpora and train LoRA personas
        from bot.app.engines import load_options
        from persona.cli import main as persona_main

        return persona_main(argv[1:], load_options(Settings()))
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=__doc__,
        epilog="`python -m bot VERB --help` lists what VERB takes and the settings it reads.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("console", help="chat with the bot in this terminal")
    commands.add_parser("run", help="start every platform configured in the environment")
    commands.add_parser("persona", help="persona tools: prepare nucc …, train … (see --help)")
    commands.add_parser("models", help="list the named models with size and memory estimates")
    from bot.engines.llamacpp.cli import add_parser as add_convert_parser

    add_convert_parser(commands)
    bench = commands.add_parser("bench", help="measure many channels at once (CPU benchmark)")
    bench.add_argument("--channels", default="1,4,8,16", help="comma-separated channel counts")
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument(
        "--engine",
        default="",
        help="compare engines side by side, e.g. transformers,llamacpp (openai needs --openai-url)",
    )
    bench.add_argument("--quant", default="q4_k_m", help="the GGUF llamacpp runs")
    bench.add_argument("--openai-url", default="", help="BASE_URL|MODEL of a server running it")
    bench.add_argument(
        "--shape", default="106m", choices=["106m", "1b"], help="the GPTNeoX shape (--engine only)"
    )
    db = commands.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade the schema to the newest version")
    for verb, names in VERB_SETTINGS.items():
        # Set here rather than in add_parser, so that convert's (built in its engine) gets it too.
        verb_parser = commands.choices[verb]
        verb_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        verb_parser.epilog = f"{SETTINGS_SOURCE}\n\n{settings_help(names)}"
    args = parser.parse_args(argv)

    if args.command == "models":
        from bot.models.catalogue import format_catalogue

        print(format_catalogue())
        return 0
    settings = Settings()
    console = args.command == "console" or (
        args.command == "run" and not settings.configured_platforms()
    )
    log_file = settings.console_log_file
    interactive = console and sys.stdin.isatty() and bool(log_file)
    configure_logging(
        settings.log_level, interactive_log_file=Path(log_file) if interactive else None
    )
    if args.command == "db":
        from bot.storage.database import create_db_engine, upgrade_database

        upgrade_database(create_db_engine(settings.database_url))
        return 0
    if args.command == "convert":
        from bot.engines.llamacpp.cli import run as convert

        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        return convert(args, settings.model_cache_dir, settings.prompt_format, token)
    if args.command == "bench":
        from bot.bench.channels import SHAPES, run_benchmark

        counts = tuple(int(c) for c in args.channels.split(","))
        if args.engine:
            from bot.bench.engines import run_engine_benchmark

            engines = [e.strip() for e in args.engine.split(",") if e.strip()]
            print(
                run_engine_benchmark(
                    settings.model_cache_dir,
                    engines,
                    counts,
                    args.new_tokens,
                    args.quant,
                    args.openai_url,
                    SHAPES[args.shape],
                )
            )
            return 0
        print(asyncio.run(run_benchmark(settings.model_cache_dir, counts, args.new_tokens)))
        return 0
    serve = _console if console else _platforms
    try:
        code = asyncio.run(serve(settings))
    except KeyboardInterrupt:  # Ctrl-C while the model was still loading
        code = 130
    from adapters.console.terminal import READER_THREAD

    if any(t.name == READER_THREAD and t.is_alive() for t in threading.enumerate()):
        # A thread blocked reading stdin cannot be interrupted, and the interpreter may abort
        # while finalising around it; everything is closed by now, so leave directly.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def _console(settings: Settings) -> int:
    from adapters.console.terminal import DEMO_BANNER, ConsoleAdapter
    from bot.app.bootstrap import bootstrap

    app = bootstrap(settings, platforms=[])
    signals: StopSignals | None = None
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
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if model.is_demo:
            console.announce(DEMO_BANNER)
        signals = StopSignals()
        signals.install()
        chat = asyncio.create_task(console.run(signals.stop), name="console")
        await _serve_until_stopped(app, [chat], signals)
        if not chat.cancelled():
            chat.result()  # a failure inside the console surfaces here
        return 0
    finally:
        await app.close()
        _log_stopped(signals)


async def _platforms(settings: Settings) -> int:
    """Serve every configured platform until one stops or the process is interrupted."""
    import importlib

    from bot.app.bootstrap import bootstrap

    app = bootstrap(settings)
    signals: StopSignals | None = None
    try:
        try:
            await app.start()
        except ModelLoadError as exc:
            print(f"error: {exc.user_message}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        signals = StopSignals()
        signals.install()
        servers = []
        for platform in settings.configured_platforms():
            module = importlib.import_module(PLATFORMS[platform])
            servers.append(asyncio.create_task(module.serve(app), name=platform))
        log.info("serving %s", ", ".join(settings.configured_platforms()))
        try:
            done = await _serve_until_stopped(app, servers, signals)
        finally:
            for task in servers:
                task.cancel()
            # Let adapters disconnect before the worker and database close.
            await asyncio.gather(*servers, return_exceptions=True)
        for task in done:
            if not task.cancelled() and isinstance(task.exception(), ConfigError):
                print(f"error: {task.exception()}", file=sys.stderr)
                return 2
            if not task.cancelled() and isinstance(task.exception(), PlatformUnreachable):
                print(f"error: {task.exception()}", file=sys.stderr)
                return 3
            task.result()
        return 0
    finally:
        await app.close()
        _log_stopped(signals)


async def _serve_until_stopped(
    app: App, tasks: list[asyncio.Task[None]], signals: StopSignals
) -> set[asyncio.Task[None]]:
    """Wait until one of `tasks` ends or a signal asks to stop; then let the replies in
    progress finish within SHUTDOWN_GRACE_SECONDS. The tasks that ended by themselves."""
    stopping = asyncio.create_task(signals.stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not signals.stop.is_set():
        return {task for task in done if task is not stopping}
    grace = app.settings.shutdown_grace_seconds
    log.info("%s received: taking no new messages and shutting down", signals.received)
    await app.stop_replies(grace, signals.hurry)
    # The console ends by itself once stopped and its reply is written (cancelled if the
    # reply was abandoned); platforms are cancelled by the caller, which disconnects them.
    console = [task for task in tasks if task.get_name() == "console"]
    if console:
        _, stuck = await asyncio.wait(console, timeout=CONSOLE_END_BOUND_S)
        for task in stuck:
            task.cancel()
        await asyncio.wait(console)
    return set()


def _log_stopped(signals: StopSignals | None) -> None:
    if signals is not None and signals.received:
        log.info("shut down cleanly after %s", signals.received)
