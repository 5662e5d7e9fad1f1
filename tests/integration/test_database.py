"""Migrations and the repository on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from bot.messages import ConversationKey
from bot.storage.database import alembic_config, create_db_engine, upgrade_database
from bot.storage.repository import Repository
from tests.conftest import BOTH_DATABASES


def test_upgrade_creates_the_schema_in_wal_mode(tmp_path):
    engine = create_db_engine(f"sqlite:///{tmp_path / 'nested' / 'bot.sqlite3'}")
    upgrade_database(engine)
    assert {"channels", "conversations", "messages", "bot_state", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


@BOTH_DATABASES
def test_downgrade_and_upgrade_round_trip_keeps_working(database_url):
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    command.downgrade(alembic_config(engine), "base")
    assert "messages" not in inspect(engine).get_table_names()
    upgrade_database(engine)
    upgrade_database(engine)  # idempotent
    repository = Repository(engine)
    key = ConversationKey("console", "local", "c")
    conversation = repository.active_conversation(key)
    repository.add_message(conversation, role="user", author_id="u", author_name="n", text="やあ")
    assert [m.text for m in repository.recent_messages(conversation)] == ["やあ"]


@BOTH_DATABASES
def test_reset_keeps_old_conversations_stored(database_url):
    engine = create_db_engine(database_url)
    upgrade_database(engine)
    repository = Repository(engine)
    key = ConversationKey("slack", "T1", "C1", "123.456")
    first = repository.active_conversation(key)
    repository.add_message(first, role="user", author_id="u", author_name="n", text="古い話")
    second = repository.reset(key)
    assert second != first and repository.active_conversation(key) == second
    assert repository.recent_messages(second) == []
    assert [m.text for m in repository.recent_messages(first)] == ["古い話"]


@BOTH_DATABASES
def test_state_and_channel_settings_survive_a_new_engine(database_url):
    url = database_url
    engine = create_db_engine(url)
    upgrade_database(engine)
    key = ConversationKey("discord", "g", "c")
    repository = Repository(engine)
    repository.set_persona(key, "friendly")
    repository.set_sampling(key, {"temperature": 0.3})
    repository.set_state("model", "demo")
    engine.dispose()
    again = Repository(create_db_engine(url))
    assert again.channel_settings(key).persona == "friendly"
    assert again.channel_settings(key).sampling == {"temperature": 0.3}
    assert again.get_state("model") == "demo"


def test_bots_starting_together_on_a_new_postgresql_database_both_upgrade_it(postgres):
    """Replicas start at the same moment and each upgrades the schema on start."""
    import threading

    url = postgres.create_database()
    engines = [create_db_engine(url) for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def upgrade(engine) -> None:
        start.wait()
        try:
            upgrade_database(engine)
        except BaseException as exc:  # the test reports any failure of any starter
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engines[0].connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for engine in engines:
        engine.dispose()


def test_two_processes_creating_one_channel_at_once_share_it(postgres):
    """Two threads of one Slack channel are two conversations, so two bot processes may store
    their first messages at the same moment: both must land in the one channel row."""
    import threading

    url = postgres.create_database()
    upgrade_database(create_db_engine(url))
    repositories = [Repository(create_db_engine(url)) for _ in range(6)]
    start = threading.Barrier(len(repositories))
    errors: list[BaseException] = []

    def first_message(i: int) -> None:
        start.wait()
        try:
            repositories[i].add_user_message(
                ConversationKey("slack", "T", "C", f"thread{i}"),
                author_id="u",
                author_name="n",
                text=f"{i}",
            )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_message, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with repositories[0].database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM channels")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 6


def test_a_postgresql_url_without_its_driver_says_what_to_install(monkeypatch):
    import sys

    import pytest

    from bot.errors import ConfigError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[postgres\]'"):
        create_db_engine("postgresql+psycopg://bot@127.0.0.1:5432/bot")


@BOTH_DATABASES
def test_joined_slack_threads_stored_as_one_list_per_channel_become_rows(database_url):
    engine = create_db_engine(database_url)
    command.upgrade(alembic_config(engine), "0003")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO bot_state (key, value) VALUES (:k, :v)"),
            [
                {"k": "slack:threads:T1:C1", "v": '["1.0", "2.0"]'},
                {"k": "slack:threads:T1:C2", "v": "{not json"},
                {"k": "chosen_model", "v": "demo"},
            ],
        )
    upgrade_database(engine)
    repository = Repository(engine)
    joined = [
        repository.has_joined_thread(ConversationKey("slack", "T1", channel, ts))
        for channel, ts in [("C1", "1.0"), ("C1", "2.0"), ("C1", "3.0"), ("C2", "1.0")]
    ]
    assert joined == [True, True, False, False]
    assert repository.get_state("slack:threads:T1:C1") is None
    assert repository.get_state("chosen_model") == "demo"
    repository.join_thread(ConversationKey("slack", "T1", "C1", "1.0"))  # joined twice: fine
    command.downgrade(alembic_config(engine), "0003")
    assert Repository(engine).get_state("slack:threads:T1:C1") == '["1.0", "2.0"]'
