"""Text commands, as the console (and any platform passing plain text) sends them."""

from __future__ import annotations

import pytest

from bot.chat.commands import AdminService, first_word, parse_command


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/stop", True),
        ("/model　demo", True),
        ("/ ", False),
        ("/", False),
        ("/unknown", True),  # answered with the list of commands, never chatted
        ("/Set-It_2 x", True),
        ("/usr/bin/python が動かない", False),
        ("/ω/", False),
        ("/1 番目", False),
        ("/reset。", False),
        ("こんにちは", False),
    ],
)
def test_text_commands_are_recognised_without_tripping_on_blanks(text, expected):
    assert AdminService.is_command(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/STATUS", ("status", "")),
        ("/model　demo", ("model", "demo")),
        ("/set  temperature 0.5 ", ("set", "temperature 0.5")),
        ("/foo", ("foo", "")),
        ("/usr/bin", None),
        ("/", None),
    ],
)
def test_parse_command(text, expected):
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("temperature 0.5", ("temperature", "0.5")),
        ("set\u3000top_k\u300010", ("set", "top_k\u300010")),
        ("clear", ("clear", "")),
        ("", ("", "")),
        ("  persona   friendly ", ("persona", "friendly")),
    ],
)
def test_first_word_splits_at_any_whitespace(text, expected):
    assert first_word(text) == expected
