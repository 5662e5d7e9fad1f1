"""The `/chat` slash command: the chat's command table (bot/chat/commands.py) as
`/chat <subcommand> <argument>`.

Settings apply to the channel the command was typed in (Slack does not say which thread), so
`stop` reaches every thread of the channel and `reset` explains how to reset a thread. Results
that change the channel are shown to everyone there; the rest only to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.chat.commands import ADMIN_ONLY, COMMANDS, AdminService, Caller, CommandReply, first_word
from bot.errors import UserFacingError
from bot.messages import ConversationKey, repair_text

log = logging.getLogger(__name__)

COMMAND = "/chat"
REFUSAL = ADMIN_ONLY
GENERIC_FAILURE = "申し訳ありません、コマンドの処理中にエラーが起きました。もう一度お試しください。"


@dataclass(frozen=True)
class SlashRequest:
    key: ConversationKey  # the channel (thread "")
    user_id: str
    subcommand: str
    argument: str
    is_dm: bool


Respond = Callable[[CommandReply], Awaitable[None]]


def parse(text: str) -> tuple[str, str]:
    """`"persona friendly"` -> `("persona", "friendly")`; empty text asks for help. Text that is
    not valid Unicode is repaired first, as messages are."""
    subcommand, argument = first_word(repair_text(text))
    return (subcommand.lower() or "help"), argument


class ChatCommands:
    def __init__(self, admin: AdminService, *, is_admin: Callable[[str], Awaitable[bool]]) -> None:
        self.admin = admin
        self.is_admin = is_admin

    async def run(self, request: SlashRequest, respond: Respond) -> None:
        """Answer one `/chat` (already acknowledged) through `respond`; never raises."""
        command = COMMANDS.get(request.subcommand)
        try:
            # Who someone is costs a Web API call: asked only where the answer matters.
            needs_admin = command is not None and command.who != "anyone"
            caller = Caller(
                request.key,
                is_admin=needs_admin and await self.is_admin(request.user_id),
                is_dm=request.is_dm,
                prefix=f"{COMMAND} ",
                whole_channel=True,
            )
            if command is not None:
                self.admin.check_access(command, request.argument, caller)
                if command.progress and request.argument:
                    await respond(CommandReply(command.progress))
            reply = await self.admin.run(request.subcommand, request.argument, caller)
        except UserFacingError as exc:
            await respond(CommandReply(exc.user_message))
            return
        except Exception:
            log.exception("%s %s failed in %s", COMMAND, request.subcommand, request.key)
            await respond(CommandReply(GENERIC_FAILURE))
            return
        await respond(reply)
