"""Alembic environment. The bot hands in its engine through `config.attributes["engine"]`;
the `alembic` command line uses `sqlalchemy.url` from alembic.ini or DATABASE_URL."""

from __future__ import annotations

import os

from alembic import context

from bot.storage.tables import Base

config = context.config
target_metadata = Base.metadata


def _engine():
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from bot.storage.database import create_db_engine

    url = os.environ.get("DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    return create_db_engine(url or "sqlite:///./data/bot.sqlite3")


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection) -> None:  # type: ignore[no-untyped-def]
    # Batch mode lets ALTER-style changes work on SQLite (copy-and-move of the table).
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


def run_migrations_online() -> None:
    # The bot hands in a connection that holds the migration lock (PostgreSQL).
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    with _engine().connect() as connection:
        _run_on(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
