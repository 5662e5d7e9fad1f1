"""A small HTTP client for OpenAI-compatible servers: `/v1/models` and streamed
`/v1/completions`, with the standard library only (the worker thread is not an event loop).

A stream can be closed from another thread: the socket is shut down, the server sees the
client go away and (vLLM) aborts the request, so a cancelled reply stops costing GPU time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Connection errors worth retrying: the server is starting, restarting or briefly overloaded.
RETRYABLE = (ConnectionError, TimeoutError, socket.gaierror, http.client.RemoteDisconnected)


class ServerUnavailable(Exception):
    """The server could not be reached after the retries."""


class ServerError(Exception):
    """The server answered with an HTTP error."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class ServerConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    api_key: str | None = field(default=None, repr=False)  # a secret: never in a log line
    timeout_s: float = 600.0  # a whole reply may take long; connect errors come fast anyway
    retries: int = 3
    backoff_s: float = 0.5  # first wait; doubles each retry

    @property
    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.base_url.rstrip("/"))


def backoff_delays(retries: int, first_s: float) -> list[float]:
    """Waits before each retry: first_s, 2*first_s, 4*first_s, ..."""
    return [first_s * 2**i for i in range(retries)]


def _connection(config: ServerConfig) -> http.client.HTTPConnection:
    parts = config.parts
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname or "127.0.0.1", parts.port, timeout=config.timeout_s)


def _headers(config: ServerConfig) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    return headers


def with_retries(
    config: ServerConfig,
    attempt: Callable[[], Any],
    *,
    cancelled: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run `attempt`, retrying connection errors with backoff; ServerUnavailable at the end."""
    last: BaseException | None = None
    for delay in [*backoff_delays(config.retries, config.backoff_s), None]:
        try:
            return attempt()
        except RETRYABLE as exc:
            last = exc
        if delay is None or cancelled():
            break
        sleep(delay)
    raise ServerUnavailable(f"{config.base_url}: {last}") from last


def get_json(config: ServerConfig, path: str) -> Any:
    def attempt() -> Any:
        conn = _connection(config)
        try:
            conn.request("GET", config.parts.path + path, headers=_headers(config))
            response = conn.getresponse()
            body = response.read().decode("utf-8", errors="replace")
            if response.status >= 400:
                raise ServerError(response.status, body)
            return json.loads(body)
        finally:
            conn.close()

    return with_retries(config, attempt)


def list_models(config: ServerConfig) -> list[dict[str, Any]]:
    """The server's `/v1/models` entries (`id`, and `max_model_len` on vLLM)."""
    return list(get_json(config, "/models").get("data", []))


class CompletionStream:
    """One streamed `/v1/completions` request. `chunks()` yields each parsed SSE event's
    first choice; `close()` (from any thread) ends the request."""

    def __init__(self, config: ServerConfig, body: dict[str, Any]) -> None:
        self.config = config
        self.body = body
        self._conn: http.client.HTTPConnection | None = None
        self._closed = False

    def open(self) -> None:
        """Send the request; retryable errors propagate for `with_retries`."""
        conn = _connection(self.config)
        self._conn = conn
        conn.request(
            "POST",
            self.config.parts.path + "/completions",
            body=json.dumps(self.body).encode("utf-8"),
            headers={**_headers(self.config), "Accept": "text/event-stream"},
        )
        response = conn.getresponse()
        if response.status >= 400:
            body = response.read().decode("utf-8", errors="replace")
            conn.close()
            raise ServerError(response.status, body)
        self._response = response

    def chunks(self) -> Iterator[dict[str, Any]]:
        for raw in self._response:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            event = json.loads(data)
            if "error" in event:
                raise ServerError(500, json.dumps(event["error"], ensure_ascii=False))
            choices = event.get("choices") or []
            if choices:
                yield choices[0]
        if not self._closed:
            # The server went away without `[DONE]` (killed, restarted).
            raise ConnectionError("the stream ended before the server finished it")

    def close(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is None:
            return
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked on this socket
        with contextlib.suppress(OSError):
            conn.close()
