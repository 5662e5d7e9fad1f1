"""Database engine and migrations. Built in bootstrap, never at import time."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from bot.errors import ConfigError

log = logging.getLogger(__name__)


def create_db_engine(url: str) -> Engine:
    """An engine for `url`. For a SQLite file its folder is created, and WAL mode, foreign keys
    and a busy timeout are switched on for every connection."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url)
    except ImportError as exc:
        if parsed.get_backend_name() != "postgresql":
            raise
        raise ConfigError(
            "DATABASE_URL is a PostgreSQL URL but its driver is not installed: "
            "pip install -e '.[postgres]' (psycopg 3), and use postgresql+psycopg://…"
        ) from exc
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no fsync per commit
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def alembic_config(engine: Engine) -> Config:
    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["engine"] = engine
    return config


# Any fixed 64-bit number; conversation locks (bot/storage/shared_locks.py) hash into the same
# space, and a collision would only make one wait for the other.
MIGRATION_LOCK_ID = 0x6E69686F6E676F00


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (the bot does this on start). On PostgreSQL, processes
    starting together take turns (an advisory lock), so the schema is created exactly once."""
    config = alembic_config(engine)
    if engine.dialect.name != "postgresql":
        command.upgrade(config, revision)
    else:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()  # the lock belongs to the session, not the transaction
            try:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                )
                connection.commit()
    log.info("database at %s is up to date", engine.url.render_as_string(hide_password=True))
