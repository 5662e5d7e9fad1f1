"""The OpenAI-compatible client's pure parts, and its retries against a real closed port."""

from __future__ import annotations

import socket

import pytest

from bot.engines.openai.client import (
    ServerConfig,
    ServerUnavailable,
    backoff_delays,
    list_models,
    with_retries,
)
from bot.engines.openai.engine import CharTokenizer, refuses_token_ids

# llama-cpp-python's server, as it answered a token-id prompt here.
LLAMA_CPP_PYTHON_500 = (
    "{\"error\":{\"message\":\"4 validation errors:\\n  {'type': 'string_type', 'loc': "
    "('body', 'prompt', 'str'), 'msg': 'Input should be a valid string', 'input': [1, 2, 3]}"
)


@pytest.mark.parametrize(
    ("status", "body", "text_only"),
    [
        (400, '{"error": "invalid prompt"}', True),
        (422, '{"detail": [{"loc": ["body", "prompt"]}]}', True),
        (500, LLAMA_CPP_PYTHON_500, True),
        (500, '{"message": "EngineCore encountered an issue."}', False),  # vLLM crashed
        (503, "Service Unavailable", False),
        (404, '{"error": "model not found"}', False),
    ],
)
def test_which_errors_mean_text_prompts_only(status: int, body: str, text_only: bool) -> None:
    assert refuses_token_ids(status, body) is text_only


@pytest.mark.parametrize(
    ("retries", "first", "delays"),
    [(0, 0.5, []), (3, 0.5, [0.5, 1.0, 2.0]), (2, 0.1, [0.1, 0.2])],
)
def test_backoff_doubles(retries: int, first: float, delays: list[float]) -> None:
    assert backoff_delays(retries, first) == delays


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_a_server_that_is_down_is_retried_with_backoff_then_reported() -> None:
    port = closed_port()
    config = ServerConfig(f"http://127.0.0.1:{port}/v1", retries=3, backoff_s=0.25)
    slept: list[float] = []
    attempts = 0

    def attempt() -> object:
        nonlocal attempts
        attempts += 1
        return socket.create_connection(("127.0.0.1", port), timeout=5)  # refused

    with pytest.raises(ServerUnavailable):
        with_retries(config, attempt, sleep=slept.append)
    assert attempts == 4 and slept == [0.25, 0.5, 1.0]


def test_listing_models_of_a_server_that_is_down_fails_clearly() -> None:
    with pytest.raises(ServerUnavailable, match=r"127\.0\.0\.1"):
        list_models(ServerConfig(f"http://127.0.0.1:{closed_port()}/v1", retries=1, backoff_s=0))


def test_a_cancelled_request_stops_retrying() -> None:
    config = ServerConfig(f"http://127.0.0.1:{closed_port()}/v1", retries=5, backoff_s=0.25)
    slept: list[float] = []
    with pytest.raises(ServerUnavailable):
        with_retries(
            config,
            lambda: list_models(ServerConfig(config.base_url, retries=0)),
            cancelled=lambda: True,
            sleep=slept.append,
        )
    assert slept == []


@pytest.mark.parametrize("text", ["こんにちは", "ユーザー: 元気？<NL>システム: ", "😊 emoji\n改行"])
def test_char_tokenizer_round_trips(text: str) -> None:
    tokenizer = CharTokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode(text)) == len(text)


def test_the_api_key_never_shows_in_a_repr() -> None:
    from bot.engines.openai.engine import OpenAIOptions

    config = ServerConfig("http://127.0.0.1:8000/v1", "sk-secret-key")
    assert "sk-secret" not in repr(config)
    assert "sk-secret" not in repr(OpenAIOptions(api_key="sk-secret-key"))
