"""The Slack adapter: slack-bolt listeners in one table, acknowledged at once, each reply worked
out in a background task that turns the event into an `IncomingMessage` for the manager.

Socket Mode (bot token + app token, no public URL) or HTTP (Events API and the slash command on
`/slack/events`, signatures checked with the signing secret), chosen by `SLACK_MODE`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.app.async_server import AsyncSlackAppServer
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.commands import COMMAND, ChatCommands, SlashRequest, parse
from adapters.slack.directory import JoinedThreads, UserDirectory
from adapters.slack.events import PLATFORM, RecentKeys, SlackMessage, read_event, to_incoming
from adapters.slack.sink import SlackReplySink
from adapters.slack.text import TEXT_LIMIT_BYTES, escape_mrkdwn, mentioned_user_ids
from bot.app.bootstrap import App
from bot.chat.commands import CommandReply
from bot.errors import ConfigError
from bot.messages import ConversationKey, IncomingMessage
from bot.storage.claims import RENEW_EVERY

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
APOLOGY = "申し訳ありません、メッセージを読み取れませんでした。もう一度お試しください。"


class SlackConfigError(ConfigError):
    """A Slack setting needed for the chosen mode is missing."""


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is in the workspace, from auth.test."""

    user_id: str
    bot_id: str
    team_id: str


class SlackAdapter:
    """Owns the bolt app. `start()` connects in the configured mode, `close()` disconnects and
    cancels replies in progress. `api_base_url` points the Web API client elsewhere (tests)."""

    def __init__(
        self,
        app: App,
        *,
        api_base_url: str | None = None,
        update_interval_s: float = 1.0,
        text_limit: int = TEXT_LIMIT_BYTES,
    ) -> None:
        settings = app.settings
        if settings.slack_bot_token is None:
            raise SlackConfigError("SLACK_BOT_TOKEN is not set (xoxb-…).")
        self.app = app
        self.settings = settings
        self.update_interval_s = update_interval_s
        self.text_limit = text_limit
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=api_base_url or settings.slack_api_url,
            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)],
        )
        secret = settings.slack_signing_secret
        self.bolt = AsyncApp(
            client=self.client,
            signing_secret=secret.get_secret_value() if secret else "",
            name="nihongo-chat-bot",
        )
        self.users = UserDirectory(self.client)
        self.threads = JoinedThreads(self._thread_joined, self._join_thread)
        self.commands = ChatCommands(app.admin, is_admin=self.is_admin)
        self.identity = BotIdentity("", "", "")
        self._recent = RecentKeys()
        self._claims = app.claims  # other bot processes on the same database
        self._tasks: set[asyncio.Task[None]] = set()
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None

        # Every listener only picks the work and hands it to a task, so Slack always gets its
        # acknowledgement well within 3 seconds (bolt acks events before calling listeners).
        for register, name, listener in (
            (self.bolt.event, "app_mention", self._on_mention),  # @bot in a channel
            (self.bolt.event, "message", self._on_message),  # DMs; replies in joined threads
            (self.bolt.command, COMMAND, self._on_command),  # /chat
        ):
            register(name)(listener)
        self.bolt.error(self._on_error)

    # Lifecycle

    async def start(self) -> None:
        if self.settings.slack_mode == "http":
            await self.start_http(self.settings.slack_http_host, self.settings.slack_http_port)
        else:
            await self.start_socket_mode()

    async def identify(self) -> BotIdentity:
        """auth.test: checks the token and learns the bot's own user id (to ignore itself)."""
        response = await self.client.auth_test()
        self.identity = BotIdentity(
            str(response["user_id"]), str(response.get("bot_id") or ""), str(response["team_id"])
        )
        log.info("Slack: signed in as %s in team %s", self.identity.user_id, self.identity.team_id)
        return self.identity

    async def start_socket_mode(self) -> None:
        token = self.settings.slack_app_token
        if token is None:
            raise SlackConfigError(
                "Socket Mode needs SLACK_APP_TOKEN (xapp-…, scope connections:write); "
                "or set SLACK_MODE=http with SLACK_SIGNING_SECRET."
            )
        await self.identify()
        self._socket = AsyncSocketModeHandler(
            self.bolt, token.get_secret_value(), web_client=self.client
        )
        await self._socket.connect_async()
        log.info("Slack: connected in Socket Mode")

    async def start_http(self, host: str, port: int) -> int:
        """Serve the Events API and the slash command; returns the port (0 picks a free one)."""
        if self.settings.slack_signing_secret is None:
            raise SlackConfigError("HTTP mode needs SLACK_SIGNING_SECRET to check requests.")
        await self.identify()
        server = AsyncSlackAppServer(port=port, path=EVENTS_PATH, app=self.bolt, host=host)
        self._runner = web.AppRunner(server.web_app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = int(self._runner.addresses[0][1])
        log.info("Slack: HTTP mode on http://%s:%d%s", host, bound, EVENTS_PATH)
        return bound

    async def is_connected(self) -> bool:
        """For the health check: the Socket Mode connection is up, or the HTTP server serves."""
        if self._socket is not None:
            return bool(await self._socket.client.is_connected())
        return self._runner is not None

    async def wait_idle(self) -> None:
        """Wait until no reply or command is in progress."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        await self.wait_idle()

    # Listeners: quick, synchronous decisions; the rest goes to a task

    async def _on_mention(self, body: dict, event: dict) -> None:
        self._accept(body, event, mention=True)

    async def _on_message(self, body: dict, event: dict) -> None:
        self._accept(body, event, mention=False)

    async def _on_command(self, ack: AsyncAck, command: dict, respond: AsyncRespond) -> None:
        await ack()  # at once: a model load takes far longer than Slack's 3 seconds
        subcommand, argument = parse(command.get("text") or "")
        channel = command["channel_id"]
        request = SlashRequest(
            key=ConversationKey(PLATFORM, command["team_id"], channel),
            user_id=command["user_id"],
            subcommand=subcommand,
            argument=argument,
            is_dm=channel.startswith("D"),
        )

        async def reply(answer: CommandReply) -> None:
            response_type = "in_channel" if answer.public else "ephemeral"
            await respond(text=escape_mrkdwn(answer.text), response_type=response_type)

        self._spawn(self.commands.run(request, reply), f"{COMMAND} {subcommand}")

    async def _on_error(self, error: Exception, body: dict) -> None:
        log.error("Slack listener failed (%s)", body.get("type"), exc_info=error)

    def _accept(self, body: dict, event: dict, *, mention: bool) -> None:
        team_id = body.get("team_id") or event.get("team") or self.identity.team_id
        message = read_event(
            event, team_id=team_id, bot_user_id=self.identity.user_id, mention=mention
        )
        if message is None:
            return  # most events: nothing to remember about them
        event_id = body.get("event_id")
        if event_id and not self._recent.first_time(f"event:{event_id}"):
            log.info("Slack: ignored redelivered event %s", event_id)
            return
        self._spawn(self._answer(message), f"reply {message.key}")

    # The work

    async def _answer(self, message: SlackMessage) -> None:
        key = message.key
        if message.needs_joined_thread and not await self.threads.contains(
            key.workspace, message.channel, key.thread
        ):
            return
        # The same message can arrive as app_mention and as message, and again on retries.
        if not self._recent.first_time(message.identity):
            log.info("Slack: already answering %s", message.identity)
            return
        sink = SlackReplySink(
            self.client,
            message.channel,
            message.reply_thread_ts,
            interval_s=self.update_interval_s,
            limit=self.text_limit,
        )
        if self.app.manager.replies.closing:
            # Before claiming: a retry of this event stays free for another bot process.
            await self.app.manager.turn_away(PLATFORM, sink)
            return
        claim = f"slack:{key.workspace}:{message.identity}"
        if not await self.app.db(self._claims.claim, claim):
            log.info("Slack: another bot process is answering %s", message.identity)
            return
        # Cancelled (the bot stopping) or killed before `done`, the claim lapses after its lease
        # and a later delivery of the event is answered by whichever process gets it.
        async with self._renewing(claim):
            try:
                if message.reply_thread_ts and not message.in_dm:
                    await self.threads.join(key.workspace, message.channel, message.reply_thread_ts)
                incoming = await self._incoming(message)
            except Exception:
                log.exception("Slack: could not read %s", message.identity)
                await sink.finish(APOLOGY)
            else:
                await self.app.manager.handle(incoming, sink)
        await self.app.db(self._claims.done, claim)

    @asynccontextmanager
    async def _renewing(self, claim: str) -> AsyncIterator[None]:
        """Keep the claim's lease while the reply is worked out, however long it takes."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(RENEW_EVERY.total_seconds())
                try:
                    await self.app.db(self._claims.renew, claim)
                except Exception:  # the database is away: the reply goes on regardless
                    log.warning("Slack: could not renew the claim on %s", claim, exc_info=True)

        renewing = asyncio.create_task(renew(), name=f"renew {claim}")
        try:
            yield
        finally:
            renewing.cancel()

    async def _incoming(self, message: SlackMessage) -> IncomingMessage:
        author = await self.users.get(message.user_id)
        others = [u for u in mentioned_user_ids(message.text) if u != self.identity.user_id]
        return to_incoming(
            message,
            bot_user_id=self.identity.user_id,
            author_name=author.name,
            names=await self.users.names(others),
            is_admin=await self.is_admin(message.user_id),
        )

    async def is_admin(self, user_id: str) -> bool:
        """The one admin check: configured user ids, plus workspace admins and owners when
        SLACK_WORKSPACE_ADMINS_ARE_ADMINS is on."""
        if user_id in self.settings.slack_admin_user_ids:
            return True
        if not self.settings.slack_workspace_admins_are_admins:
            return False
        return (await self.users.get(user_id)).is_workspace_admin

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Slack task %r failed", task.get_name(), exc_info=task.exception())

    async def _thread_joined(self, key: ConversationKey) -> bool:
        return await self.app.db(self.app.repository.has_joined_thread, key)

    async def _join_thread(self, key: ConversationKey) -> None:
        await self.app.db(self.app.repository.join_thread, key)
