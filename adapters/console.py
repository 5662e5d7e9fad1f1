"""The terminal as a chat platform. The console user is an admin.

Interactive (a terminal): a prompt, replies streamed as they are generated.
Scripted (stdin is not a terminal): one message per input line, one reply per output line,
with line breaks inside a reply written as the two characters `\\n`.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import sys
from typing import TextIO

from bot.messages import ConversationKey, IncomingMessage
from bot.protocols import MessageHandler

DEMO_BANNER = (
    "※ デモモデルで動いています（ランダムに初期化した小さなモデルなので、返事は意味をなしません）。"
    "本物のモデルは MODEL=rinna/japanese-gpt-neox-3.6b-instruction-ppo などで指定します。"
)


class TerminalSink:
    """Prints the reply as it grows; if post-processing rewrote what was already shown, the
    final text is printed again in full."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = ""

    async def update(self, text: str) -> None:
        if text.startswith(self.shown):
            self.out.write(text[len(self.shown) :])
            self.out.flush()
            self.shown = text

    async def finish(self, text: str) -> None:
        if text.startswith(self.shown):
            self.out.write(text[len(self.shown) :] + "\n")
        else:
            self.out.write("\n" + text + "\n")
        self.out.flush()


class LineSink:
    """One reply per line, for scripts."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def update(self, text: str) -> None:
        return None

    async def finish(self, text: str) -> None:
        self.out.write(text.replace("\\", "\\\\").replace("\n", "\\n") + "\n")
        self.out.flush()


class ConsoleAdapter:
    def __init__(
        self,
        handler: MessageHandler,
        *,
        channel: str = "console",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        interactive: bool | None = None,
        bot_name: str = "ボット",
    ) -> None:
        self.handler = handler
        self.stdin = _tolerant(stdin or sys.stdin)
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.bot_name = bot_name
        user = _user_name()
        self.key = ConversationKey("console", "local", channel)
        self.author_id, self.author_name = user, user

    def announce(self, text: str) -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    async def run(self) -> None:
        if self.interactive:
            self.announce(
                "話しかけてください。/help でコマンド一覧、Ctrl-D か /quit で終了します。"
            )
        while True:
            line = await asyncio.to_thread(self._read_line)
            if line is None:
                return
            if self.interactive and line.strip() in ("/quit", "/exit"):
                return
            message = IncomingMessage(
                key=self.key,
                author_id=self.author_id,
                author_name=self.author_name,
                text=line,
                is_admin=True,
            )
            if self.interactive:
                self.stdout.write(f"{self.bot_name}> ")
                self.stdout.flush()
                await self.handler.handle(message, TerminalSink(self.stdout))
            else:
                await self.handler.handle(message, LineSink(self.stdout))

    def _read_line(self) -> str | None:
        if self.interactive:
            try:
                return input("あなた> ")
            except EOFError:
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")


def _tolerant(stream: TextIO) -> TextIO:
    """Read bytes that are not valid in the stream's encoding as lone surrogates instead of
    raising (a strict UTF-8 locale would end the console at the first bad byte);
    `IncomingMessage` turns them into U+FFFD."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="surrogateescape")
    return stream


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"
