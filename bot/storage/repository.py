"""All SQL the bot runs. Synchronous: the conversation manager calls it on one database thread."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from bot.messages import ConversationKey
from bot.storage.tables import (
    BotState,
    Channel,
    Conversation,
    JoinedThread,
    Message,
    utcnow,
)

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    author_id: str
    author_name: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class ChannelSettings:
    persona: str | None = None
    sampling: dict = field(default_factory=dict)


class Repository:
    def __init__(self, database: Engine) -> None:
        self.database = database
        self._sessions = sessionmaker(database, expire_on_commit=False)

    def _channel(self, session: Session, key: ConversationKey, *, create: bool) -> Channel | None:
        channel = session.scalar(
            select(Channel).where(
                Channel.platform == key.platform,
                Channel.workspace_id == key.workspace,
                Channel.channel_id == key.channel,
            )
        )
        if channel is None and create:
            values = {
                "platform": key.platform,
                "workspace_id": key.workspace,
                "channel_id": key.channel,
                "sampling": {},
                "created_at": utcnow(),
            }
            # Another bot process may create the same channel at this moment (two threads of
            # one channel are two conversations, locked apart): insert unless it exists.
            insert = _INSERTS.get(session.get_bind().dialect.name)
            if insert is None:
                session.add(Channel(**values))
                session.flush()
            else:
                session.execute(insert(Channel).values(**values).on_conflict_do_nothing())
            return self._channel(session, key, create=False)
        return channel

    def _active(self, session: Session, key: ConversationKey) -> Conversation:
        channel = self._channel(session, key, create=True)
        assert channel is not None
        conversation = session.scalar(
            select(Conversation)
            .where(Conversation.channel_pk == channel.id, Conversation.thread_id == key.thread)
            .order_by(Conversation.id.desc())
            .limit(1)
        )
        if conversation is None:
            conversation = Conversation(channel_pk=channel.id, thread_id=key.thread)
            session.add(conversation)
            session.flush()
        return conversation

    def active_conversation(self, key: ConversationKey) -> int:
        with self._sessions.begin() as session:
            return self._active(session, key).id

    def reset(self, key: ConversationKey) -> int:
        """Start a fresh conversation; earlier ones stay stored but stop feeding the prompt."""
        with self._sessions.begin() as session:
            channel = self._channel(session, key, create=True)
            assert channel is not None
            conversation = Conversation(channel_pk=channel.id, thread_id=key.thread)
            session.add(conversation)
            session.flush()
            return conversation.id

    def add_message(
        self, conversation_id: int, *, role: str, author_id: str, author_name: str, text: str
    ) -> StoredMessage:
        with self._sessions.begin() as session:
            message = Message(
                conversation_id=conversation_id,
                role=role,
                author_id=author_id,
                author_name=author_name,
                text=text,
            )
            session.add(message)
            session.flush()
            return _stored(message)

    def add_user_message(
        self,
        key: ConversationKey,
        *,
        author_id: str,
        author_name: str,
        text: str,
        history_limit: int = 200,
    ) -> tuple[int, list[StoredMessage]]:
        """Store a message in the key's active conversation and return that conversation's id
        and newest `history_limit` messages (this one last), in one transaction."""
        with self._sessions.begin() as session:
            conversation = self._active(session, key)
            session.add(
                Message(
                    conversation_id=conversation.id,
                    role="user",
                    author_id=author_id,
                    author_name=author_name,
                    text=text,
                )
            )
            session.flush()
            return conversation.id, self._recent(session, conversation.id, history_limit)

    def recent_messages(self, conversation_id: int, limit: int = 200) -> list[StoredMessage]:
        """The newest `limit` messages of a conversation, oldest first."""
        with self._sessions() as session:
            return self._recent(session, conversation_id, limit)

    @staticmethod
    def _recent(session: Session, conversation_id: int, limit: int) -> list[StoredMessage]:
        rows = session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc())
            .limit(limit)
        ).all()
        return [_stored(m) for m in reversed(rows)]

    def count_messages(self, conversation_id: int) -> int:
        with self._sessions() as session:
            query = select(func.count(Message.id)).where(Message.conversation_id == conversation_id)
            return session.scalar(query) or 0

    def channel_settings(self, key: ConversationKey) -> ChannelSettings:
        with self._sessions() as session:
            channel = self._channel(session, key, create=False)
            if channel is None:
                return ChannelSettings()
            return ChannelSettings(channel.persona, dict(channel.sampling or {}))

    def set_persona(self, key: ConversationKey, persona: str | None) -> None:
        with self._sessions.begin() as session:
            channel = self._channel(session, key, create=True)
            assert channel is not None
            channel.persona = persona

    def set_sampling(self, key: ConversationKey, sampling: dict) -> None:
        with self._sessions.begin() as session:
            channel = self._channel(session, key, create=True)
            assert channel is not None
            channel.sampling = dict(sampling)

    def get_state(self, name: str) -> str | None:
        with self._sessions() as session:
            row = session.get(BotState, name)
            return row.value if row else None

    def set_state(self, name: str, value: str) -> None:
        with self._sessions.begin() as session:
            session.merge(BotState(key=name, value=value))

    def join_thread(self, key: ConversationKey) -> None:
        """Remember that the bot takes part in the thread `key` (idempotent, and safe when
        several processes join the same thread at once)."""
        values = {
            "platform": key.platform,
            "workspace_id": key.workspace,
            "channel_id": key.channel,
            "thread_id": key.thread,
            "joined_at": utcnow(),
        }
        with self._sessions.begin() as session:
            insert = _INSERTS.get(session.get_bind().dialect.name)
            if insert is None:
                if session.get(JoinedThread, _thread_pk(key)) is None:
                    session.add(JoinedThread(**values))
            else:
                session.execute(insert(JoinedThread).values(**values).on_conflict_do_nothing())

    def has_joined_thread(self, key: ConversationKey) -> bool:
        with self._sessions() as session:
            return session.get(JoinedThread, _thread_pk(key)) is not None


def _thread_pk(key: ConversationKey) -> tuple[str, str, str, str]:
    return (key.platform, key.workspace, key.channel, key.thread)


def _stored(message: Message) -> StoredMessage:
    return StoredMessage(
        message.id,
        message.role,
        message.author_id,
        message.author_name,
        message.text,
        message.created_at,
    )
