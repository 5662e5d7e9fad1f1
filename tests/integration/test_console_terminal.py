"""`python -m bot console` in a real pseudo-terminal: what a person at the keyboard sees when
they chat, press Ctrl-C or Ctrl-D."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tests.integration.terminal import CTRL_C, CTRL_D, Terminal, console_env

PROMPT = "あなた> "
BOT = "ボット> "
SHUTDOWN_NOTE = "（ボットを停止するため途中で止めました）"


def start_console(tmp_path: Path, model_cache: Path, **env: str) -> Terminal:
    terminal = Terminal(
        ["-m", "bot", "console"], console_env(tmp_path, model_cache, **env), tmp_path
    )
    terminal.read_until(PROMPT)
    return terminal


def assistant_messages(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        return [row[0] for row in db.execute("SELECT text FROM messages WHERE role='assistant'")]


def test_ctrl_c_at_the_prompt_quits_at_once(tmp_path: Path, model_cache: Path) -> None:
    terminal = start_console(tmp_path, model_cache)
    terminal.type(CTRL_C)
    assert terminal.wait(timeout=10) == 0, terminal.text
    assert "Traceback" not in terminal.text
    assert terminal.text.endswith("\n")  # the shell prompt starts on a line of its own


def test_ctrl_d_ends_with_a_newline(tmp_path: Path, model_cache: Path) -> None:
    terminal = start_console(tmp_path, model_cache)
    terminal.type(CTRL_D)
    assert terminal.wait(timeout=10) == 0, terminal.text
    after_prompt = terminal.text.rsplit(PROMPT, 1)[1]
    assert after_prompt.startswith(("\r\n", "\n")), repr(after_prompt)
    assert "Traceback" not in terminal.text


def test_log_lines_never_split_a_streamed_reply(tmp_path: Path, model_cache: Path) -> None:
    terminal = start_console(
        tmp_path, model_cache, MAX_NEW_TOKENS="200", STREAM_UPDATE_INTERVAL_S="0.02"
    )
    start = len(terminal.output)
    terminal.type("こんにちは\r".encode())
    shown = terminal.read_until(PROMPT, after=start + len(PROMPT.encode()))
    reply_line = shown.split(BOT, 1)[1].splitlines()[0]
    assert reply_line.strip()
    for line in shown.splitlines():  # a log record, if shown at all, has a line of its own
        if " INFO " in line or " WARNING " in line:
            assert re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line), line
    terminal.type(CTRL_D)
    assert terminal.wait(timeout=10) == 0
    # The details went to the console's log file instead of the conversation.
    log = (tmp_path / "data" / "console.log").read_text(encoding="utf-8")
    assert "bot.replies: reply conversation=console:local/console" in log


@pytest.mark.parametrize(
    ("grace", "tokens", "finish"),
    # With a grace the reply runs to its own end: the token limit, or the random demo model's
    # end-of-text or an invented next turn, whichever comes first in this run.
    [("120", "300", "finish=(length|eos|stop)"), ("0", "1000", "finish=cancelled")],
)
def test_ctrl_c_during_a_reply_finishes_it_within_the_grace_then_quits(
    tmp_path: Path, model_cache: Path, grace: str, tokens: str, finish: str
) -> None:
    terminal = start_console(
        tmp_path,
        model_cache,
        MAX_NEW_TOKENS=tokens,  # 1000: a few seconds on the demo model
        STREAM_UPDATE_INTERVAL_S="0.05",
        SHUTDOWN_GRACE_SECONDS=grace,
    )
    start = len(terminal.output)
    terminal.type("こんにちは\r".encode())
    terminal.read_until(BOT, after=start)
    streaming = len(terminal.output)
    terminal.read_until("", after=streaming + 1)  # some of the reply is on the screen
    terminal.type(CTRL_C)
    assert terminal.wait(timeout=150) == 0, terminal.text
    assert "Traceback" not in terminal.text
    log = (tmp_path / "data" / "console.log").read_text(encoding="utf-8")
    assert re.search(rf"reply conversation=\S+ .* {finish}\b", log), log
    assert "SIGINT" in log and "shut down cleanly" in log
    (stored,) = assistant_messages(tmp_path)
    assert stored.strip()
    assert (SHUTDOWN_NOTE in terminal.text) == (grace == "0")
    assert SHUTDOWN_NOTE not in stored  # notes are for people, not the model's history
