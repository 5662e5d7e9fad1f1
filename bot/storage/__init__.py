"""Conversation history and channel settings, in SQLite (or any SQLAlchemy database)."""

from bot.storage.database import create_db_engine, upgrade_database
from bot.storage.repository import Repository, StoredMessage

__all__ = ["Repository", "StoredMessage", "create_db_engine", "upgrade_database"]
