"""The terminal as a chat platform. The console user is an admin.

Interactive (a terminal): a prompt, replies streamed as they are generated.
Scripted (stdin is not a terminal): one message per input line, one reply per output line,
with line breaks inside a reply written as the two characters `\\n`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import io
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

from bot.app.logs import held_logs
from bot.messages import ConversationKey, IncomingMessage, MessageHandler

READER_THREAD = "console-input"
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

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Chat until end of input, /quit, or `stop` is set (then at once when waiting for a
        line, else once the reply being written is finished)."""
        if self.interactive:
            self.announce(
                "話しかけてください。/help でコマンド一覧、Ctrl-D か /quit で終了します。"
            )
        with self._terminal_restored():
            await self._chat(stop)

    async def _chat(self, stop: asyncio.Event | None) -> None:
        while stop is None or not stop.is_set():
            line = await self._next_line(stop)
            if line is None:
                if self.interactive:  # Ctrl-D or Ctrl-C left the cursor on the prompt
                    self.stdout.write("\n")
                    self.stdout.flush()
                return
            if self.interactive and line.strip() in ("/quit", "/exit"):
                return
            message = IncomingMessage(
                key=self.key,
                author_id=self.author_id,
                author_name=self.author_name,
                text=line,
                is_admin=True,
                rate_limited=False,  # the person at the machine's own keyboard
            )
            if self.interactive:
                with held_logs():  # a log line must never land inside the reply
                    self.stdout.write(f"{self.bot_name}> ")
                    self.stdout.flush()
                    await self.handler.handle(message, TerminalSink(self.stdout))
            else:
                await self.handler.handle(message, LineSink(self.stdout))

    async def _next_line(self, stop: asyncio.Event | None) -> str | None:
        """The next line, or None at end of input or once `stop` is set. Read on a daemon
        thread, so that a read blocked on the keyboard never holds the process up when it
        must exit (Ctrl-C at the prompt, SIGTERM)."""
        loop = asyncio.get_running_loop()
        line: asyncio.Future[str | None] = loop.create_future()

        def read() -> None:
            try:
                value, error = self._read_line(), None
            except BaseException as exc:
                value, error = None, exc

            def settle() -> None:
                if line.done():
                    return
                if error is not None:
                    line.set_exception(error)
                else:
                    line.set_result(value)

            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(settle)

        # The name lets bot/cli.py see a read still blocked at exit.
        threading.Thread(target=read, name=READER_THREAD, daemon=True).start()
        if stop is None:
            return await line
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({line, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        return None if stop.is_set() else line.result()

    @contextlib.contextmanager
    def _terminal_restored(self) -> Iterator[None]:
        """Put the terminal's settings back on the way out: line editing changes them while a
        line is read, and leaving in the middle of a read must not leave the shell without
        echo."""
        saved = None
        if self.interactive:
            with contextlib.suppress(ImportError, OSError, ValueError):
                import termios

                fd = self.stdin.fileno()
                saved = (fd, termios.tcgetattr(fd))
        try:
            yield
        finally:
            if saved is not None:
                import termios

                with contextlib.suppress(OSError):
                    termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])

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
