"""Shared fixtures: the demo model is built once per test session into a temporary cache;
apps are bootstrapped for real (SQLite file, migrations, worker thread) in a temp folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from bot.bootstrap import App, bootstrap
from bot.demo_model import ensure_demo_model
from bot.messages import ConversationKey, IncomingMessage
from bot.settings import Settings
from tests.fakes import demo_loader, scripted_loader


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("models")
    ensure_demo_model(cache)
    return cache


@pytest.fixture
def make_settings(tmp_path: Path, model_cache: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "model": "demo",
            "database_url": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
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
