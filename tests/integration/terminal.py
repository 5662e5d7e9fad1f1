"""A program run in a pseudo-terminal, as a person at a keyboard runs it: keys typed into the
terminal (Ctrl-C becomes SIGINT through the terminal, as it does for a user), and everything
the program shows read back."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CTRL_C, CTRL_D = b"\x03", b"\x04"


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.output = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its controlling terminal is the pty
            try:
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, *argv], env)
            finally:
                os._exit(127)

    def read_until(self, marker: str, timeout: float = 60.0, *, after: int = 0) -> str:
        """Read until `marker` appears past byte `after` of the output; the output so far."""
        wanted = marker.encode()
        deadline = time.monotonic() + timeout
        while self.output.find(wanted, after) < 0:
            if not self._read(deadline - time.monotonic()):
                raise TimeoutError(f"{marker!r} never came; the terminal shows:\n{self.text}")
        return self.text

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait(self, timeout: float) -> int | None:
        """The exit status within `timeout` seconds, reading what the program shows meanwhile;
        None if it is still running (it is then killed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                while self._read(0.2):
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self._read(0.05)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        return None

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", errors="replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # the program closed the terminal
            return False
        self.output += chunk
        return bool(chunk)


def console_env(tmp_path: Path, model_cache: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, not whichever one the venv has installed
        "MODEL": "demo",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "MODEL_CACHE_DIR": str(model_cache),
        "LOG_LEVEL": "INFO",
        "TERM": "xterm",
        **extra,
    }
