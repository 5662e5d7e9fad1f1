"""Shared fixtures: the demo model is built once per test session into a temporary cache;
apps are bootstrapped for real (SQLite file, migrations, worker thread) in a temp folder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app.bootstrap import App, bootstrap
from bot.app.settings import Settings
from bot.messages import ConversationKey, IncomingMessage
from bot.models.demo import ensure_demo_model
from tests.fakes import demo_loader, scripted_loader
from tests.postgres_server import PostgresServer, find_bin_dir
from tests.tiers import check_tables, slow_reason

DATABASES = ("sqlite", "postgresql")
# A test that runs on both databases is marked `@BOTH_DATABASES`; a module sets
# `RUN_ON_BOTH_DATABASES = True` to run every test that touches the database on both.
BOTH_DATABASES = pytest.mark.parametrize("database_url", DATABASES, indirect=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if (
        getattr(metafunc.module, "RUN_ON_BOTH_DATABASES", False)
        and "database_url" in metafunc.fixturenames
    ):
        metafunc.parametrize("database_url", DATABASES, indirect=True)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects, so `-m "not slow"` sees the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` every test that waits on another process to start (tests/tiers.py says
    which, and why): `pytest -m "not slow"` is the fast loop, plain `pytest` runs everything."""
    check_tables(config.rootpath, items)
    for item in items:
        if slow_reason(item) is not None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("models")
    ensure_demo_model(cache)
    return cache


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where a skipped database is a silent gap."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI is set, so the PostgreSQL tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, on a free loopback port."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    assert bin_dir is not None
    server = PostgresServer(bin_dir).start()
    yield server
    server.stop()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or (parametrized "postgresql") a new database on
    the session's PostgreSQL server."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgres").create_database()
    return f"sqlite:///{tmp_path / 'bot.sqlite3'}"


@pytest.fixture
def make_settings(database_url: str, model_cache: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model": "demo",
            "database_url": database_url,
            "model_cache_dir": model_cache,
            "device": "cpu",
            "dtype": "fp32",
            "user_rate_limit_per_minute": 0,
            "stream_update_interval_s": 0,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
async def make_app(
    make_settings: Callable[..., Settings], model_cache: Path
) -> AsyncIterator[Callable[..., Any]]:
    """`await make_app(replies=[...], **settings)` gives a started App. With `replies`, the
    model is a ScriptedModel playing them back (see tests/fakes.py); without, the demo model."""
    apps: list[App] = []

    async def make(
        replies: Iterable[str] | None = None, *, script_kwargs: dict | None = None, **overrides: Any
    ) -> App:
        settings = make_settings(**overrides)
        if replies is None:
            loader = demo_loader(model_cache, settings.prompt_format)
        else:
            loader, _ = scripted_loader(model_cache, replies, **(script_kwargs or {}))
        app = bootstrap(settings, loader=loader)
        apps.append(app)
        await app.start()
        app.scripted = getattr(loader, "holder", {}).get("model")  # type: ignore[attr-defined]
        return app

    yield make
    for app in apps:
        await app.close()


def message(
    text: str,
    *,
    channel: str = "c1",
    thread: str = "",
    author: str = "u1",
    name: str = "田中",
    admin: bool = False,
    platform: str = "test",
    dm: bool = False,
) -> IncomingMessage:
    return IncomingMessage(
        key=ConversationKey(platform, "w1", channel, thread),
        author_id=author,
        author_name=name,
        text=text,
        is_admin=admin,
        is_dm=dm,
    )
