"""Wires the bot together. Everything is built here, nothing at import time, and any part can be
handed in (a fake loader, an in-memory database) so tests run the real wiring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine as DatabaseEngine

from bot.app.engines import create_engine, load_options
from bot.app.settings import Settings
from bot.chat.commands import AdminService
from bot.chat.effective_settings import SettingsResolver
from bot.chat.locks import InFlight, KeyedLocks
from bot.chat.manager import ConversationManager, ManagerLimits
from bot.chat.ports import Personas
from bot.chat.rate_limit import RateLimiter
from bot.chat.replies import Replies
from bot.engines.contract import Engine, LoadedModel
from bot.engines.transformers.loader import load_model
from bot.errors import ModelLoadError
from bot.service.metrics import BotMetrics
from bot.service.monitor import Monitor
from bot.serving.worker import ModelWorker
from bot.storage.claims import EventClaims
from bot.storage.database import create_db_engine, upgrade_database
from bot.storage.db_thread import DatabaseThread
from bot.storage.repository import Repository
from bot.storage.shared_locks import shared_conversation_locks
from persona.registry import PersonaRegistry

log = logging.getLogger(__name__)

Loader = Callable[[str], LoadedModel]
STOPPED_REPLY_BOUND_S = 10.0


@dataclass
class App:
    settings: Settings
    database: DatabaseEngine
    repository: Repository
    db: DatabaseThread
    worker: ModelWorker
    personas: Personas
    admin: AdminService
    manager: ConversationManager
    monitor: Monitor
    claims: EventClaims  # which process answers a platform event that several receive

    async def start(self) -> LoadedModel:
        """Upgrade the database, start the worker and load the configured model.
        Raises ModelLoadError (with a message saying what to change) if the model cannot load."""
        await self.monitor.start()  # the health port says 503 until the model has loaded
        await self.db(upgrade_database, self.database)
        default = self.settings.default_persona
        if default and default not in self.personas.names():
            log.warning(
                "DEFAULT_PERSONA=%s is not a persona (%s); it is ignored",
                default,
                ", ".join(self.personas.names()),
            )
        self.worker.start()
        chosen = await self.admin.startup_model()
        if chosen != self.settings.model:
            try:
                return await self.worker.load(chosen)
            except ModelLoadError as exc:
                log.warning(
                    "the model chosen with /model (%s) failed to load, using MODEL=%s: %s",
                    chosen,
                    self.settings.model,
                    exc,
                )
        return await self.worker.load(self.settings.model)

    async def stop_replies(self, grace_s: float, hurry: asyncio.Event | None = None) -> None:
        """Take no new messages; give the replies in progress `grace_s` seconds (or until
        `hurry` is set) to finish, then stop the rest, which end with a note."""
        replies = self.manager.replies
        replies.closing = True
        if replies.count:
            log.info("replies in progress: %d; waiting up to %g s", replies.count, grace_s)
            await replies.wait_idle(grace_s, hurry)
        if replies.count:
            stopped = self.admin.in_flight.cancel_all()
            log.warning("stopping %d generation(s) still running", stopped)
            # A stopped generation ends within a token; this bounds a platform that hangs
            # while sending the final text.
            if not await replies.wait_idle(STOPPED_REPLY_BOUND_S):
                log.warning("replies abandoned unfinished: %d", replies.count)

    async def close(self) -> None:
        await self.monitor.close()
        await self.worker.stop()
        self.db.close()
        self.database.dispose()


def default_loader(settings: Settings) -> Loader:
    options = load_options(settings)
    return lambda spec: load_model(spec, options)


def _warning_about_budget(loader: Loader, resolver: SettingsResolver) -> Loader:
    """Every load (at start, /model, after an idle unload) warns when MAX_NEW_TOKENS is too
    long for the model just loaded (replies are then capped)."""

    def load(spec: str) -> LoadedModel:
        loaded = loader(spec)
        warning = resolver.env_budget_warning(loaded, loaded.name)
        if warning:
            log.warning("%s", warning)
        return loaded

    return load


def bootstrap(
    settings: Settings,
    *,
    loader: Loader | None = None,
    engine: Engine | None = None,
    database: DatabaseEngine | None = None,
    personas: Personas | None = None,
    platforms: list[str] | None = None,
) -> App:
    """`platforms`: those this process will serve, which /healthz waits for (by default every
    configured one; the console serves none, whatever tokens .env holds). `loader` replaces the
    transformers engine's loading (tests: the demo model, a scripted model); `engine` replaces
    the engine that ENGINE names, `database` the one DATABASE_URL names, `personas` the
    persona files."""
    database = database or create_db_engine(settings.database_url)
    repository = Repository(database)
    db = DatabaseThread()
    personas = personas or PersonaRegistry.load(settings.persona_dir)
    resolver = SettingsResolver(
        personas,
        env_overrides={
            "max_new_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,
            "repetition_penalty": settings.repetition_penalty,
        },
        default_persona=settings.default_persona,
    )
    metrics = BotMetrics()
    engine = engine or create_engine(settings, loader or default_loader(settings))
    worker = ModelWorker(
        engine,
        loader=metrics.timed_loader(_warning_about_budget(engine.load, resolver)),
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
        idle_unload_s=settings.idle_unload_minutes * 60,
        batch_window_s=settings.batch_window_ms / 1000,
    )
    replies = Replies()  # the manager tracks them; /healthz says when they are closing
    monitor = Monitor(
        metrics=metrics,
        replies=replies,
        database=database,
        worker=worker,
        platforms=settings.configured_platforms() if platforms is None else platforms,
        host=settings.health_host,
        port=settings.health_port,
    )
    # Across processes on PostgreSQL; within this one on SQLite.
    locks, in_flight = KeyedLocks(shared_conversation_locks(database)), InFlight()
    admin = AdminService(
        repository=repository,
        db=db,
        worker=worker,
        personas=personas,
        locks=locks,
        in_flight=in_flight,
        resolver=resolver,
        configured_model=settings.model,
        reset_requires_admin=settings.reset_requires_admin,
    )
    limits = ManagerLimits(
        max_message_chars=settings.max_message_chars,
        generation_timeout_s=settings.generation_timeout_s,
        stream_update_interval_s=settings.stream_update_interval_s,
    )
    manager = ConversationManager(
        repository=repository,
        db=db,
        worker=worker,
        personas=personas,
        admin=admin,
        limits=limits,
        locks=locks,
        in_flight=in_flight,
        rate_limiter=RateLimiter(settings.user_rate_limit_per_minute),
        resolver=resolver,
        observer=metrics,
        replies=replies,
    )
    claims = EventClaims(database)
    return App(
        settings, database, repository, db, worker, personas, admin, manager, monitor, claims
    )
