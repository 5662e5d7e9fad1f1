"""Health and metrics of a running bot, and the optional HTTP port that serves them.

`/healthz` answers 200 when the model is loaded (or unloaded while idle: the next message
reloads it), the database answers and every served platform is connected; 503 otherwise, and
while shutting down (with which check failed, as JSON); `/metrics` is the
Prometheus text format. Off unless HEALTH_PORT is set; on 127.0.0.1 unless HEALTH_HOST says
otherwise (the numbers are not secret, but nothing outside needs them by default).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from bot.chat.replies import Replies
from bot.errors import ConfigError
from bot.service.metrics import BotMetrics
from bot.serving.worker import ModelWorker

log = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 3.0
ConnectedCheck = Callable[[], bool | Awaitable[bool]]


@dataclass(frozen=True)
class Health:
    model_loaded: bool
    model: str | None
    database: bool
    platforms: dict[str, bool]
    idle_unloaded: bool = False  # unloaded after IDLE_UNLOAD_MINUTES; the next message reloads it
    stopping: bool = False  # shutting down: new messages are turned away

    @property
    def ok(self) -> bool:
        serving = self.model_loaded or self.idle_unloaded
        return serving and self.database and all(self.platforms.values()) and not self.stopping

    def as_json(self) -> dict:
        status = "stopping" if self.stopping else "ok" if self.ok else "unavailable"
        return {
            "status": status,
            "model": {
                "loaded": self.model_loaded,
                "name": self.model,
                "unloaded_while_idle": self.idle_unloaded,
            },
            "database": self.database,
            "platforms": self.platforms,
        }


class Monitor:
    """Owned by the App. Adapters `register_platform` a check of their connection once they
    serve; the metrics observe the conversation manager and the model loader."""

    def __init__(
        self,
        *,
        metrics: BotMetrics,
        database: Engine,
        worker: ModelWorker,
        platforms: list[str],
        replies: Replies,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.metrics = metrics
        self.database = database
        self.worker = worker
        self.expected = list(platforms)
        self.replies = replies
        self.host = host
        self.port = port
        self._checks: dict[str, ConnectedCheck] = {}
        self._runner: web.AppRunner | None = None

    def register_platform(self, name: str, connected: ConnectedCheck) -> None:
        self._checks[name] = connected
        if name not in self.expected:
            self.expected.append(name)

    def unregister_platform(self, name: str) -> None:
        self._checks.pop(name, None)

    async def platforms(self) -> dict[str, bool]:
        """Each configured platform: connected or not (not yet registered counts as not)."""
        states: dict[str, bool] = {}
        for name in self.expected:
            check = self._checks.get(name)
            try:
                state = check() if check is not None else False
                states[name] = bool(await state if inspect.isawaitable(state) else state)
            except Exception:
                log.exception("checking the %s connection failed", name)
                states[name] = False
        return states

    async def database_reachable(self) -> bool:
        def ping() -> None:
            with self.database.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(asyncio.to_thread(ping), DATABASE_TIMEOUT_S)
        except Exception as exc:
            log.warning("health check: the database did not answer: %s", exc)
            return False
        return True

    async def health(self) -> Health:
        current, unloaded = self.worker.current, self.worker.unloaded_spec
        platforms, database = await asyncio.gather(self.platforms(), self.database_reachable())
        health = Health(
            current is not None,
            current.name if current else unloaded,
            database,
            platforms,
            idle_unloaded=current is None and unloaded is not None,
            stopping=self.replies.closing,
        )
        self._refresh(health)
        return health

    def _refresh(self, health: Health) -> None:
        metrics = self.metrics
        metrics.model_loaded.set(1 if health.model_loaded else 0)
        metrics.database_up.set(1 if health.database else 0)
        for name, connected in health.platforms.items():
            metrics.platform_connected.labels(name).set(1 if connected else 0)
        metrics.queue_depth.set(self.worker.queue_depth)
        metrics.tokens_per_second.set(self.worker.recent_tokens_per_second())

    # The HTTP port

    async def start(self) -> int | None:
        """Serve /healthz and /metrics when a port is configured; returns the bound port."""
        if self.port is None or self._runner is not None:
            return None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:  # in use, or a host this machine does not have
            await self.close()
            raise ConfigError(
                f"HEALTH_PORT={self.port}: cannot listen on {self.host}:{self.port} "
                f"({exc.strerror or exc}); choose a free port (another bot on this machine "
                "needs its own) or leave HEALTH_PORT unset"
            ) from None
        bound = self.port = int(self._runner.addresses[0][1])  # port 0 picks a free one
        log.info("health and metrics on http://%s:%d (/healthz, /metrics)", self.host, bound)
        return bound

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        health = await self.health()
        return web.json_response(health.as_json(), status=200 if health.ok else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.health()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
