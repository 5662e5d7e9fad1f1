"""Splitting replies into Discord messages: table-driven, with a small limit so the cases read
at a glance, plus the invariants on real-sized text."""

from __future__ import annotations

import pytest

from adapters.discord.split import MESSAGE_LIMIT, split_reply

CODE = "```py\nx = 1\ny = 2\n```"

CASES = [
    ("short text stays whole", "こんにちは。", 20, ["こんにちは。"]),
    ("blank text gives nothing", "  \n ", 20, []),
    ("exactly the limit", "あ" * 20, 20, ["あ" * 20]),
    (
        "cut after the last 。 that fits",
        "一二三四五。六七八九十。十一十二十三。",
        16,
        ["一二三四五。六七八九十。", "十一十二十三。"],
    ),
    (
        "！ and ？ end sentences",
        "すごい！本当に？うん、そうだよ。",
        10,
        ["すごい！本当に？", "うん、そうだよ。"],
    ),
    (
        "ASCII ! before Japanese ends one",
        "すごい!本当にそうなんです。",
        10,
        ["すごい!", "本当にそうなんです。"],
    ),
    ("a decimal point does not", "値は3.14です、よろしく", 10, ["値は3.14です、", "よろしく"]),
    (
        "closing brackets stay with it",
        "「はい。」と言った。続き",
        8,
        ["「はい。」", "と言った。続き"],
    ),
    (
        "line breaks are cut points",
        "一行目\n二行目です\n三行目",
        12,
        ["一行目\n二行目です", "三行目"],
    ),
    (
        "a code block moves whole to the next message",
        "前置きです。\n" + CODE + "\n後書き。",
        24,
        ["前置きです。", CODE, "後書き。"],
    ),
    (
        "never cut at a line break inside code",
        "説明\n" + CODE,
        22,
        ["説明", CODE],
    ),
    (
        "a code block longer than a message is closed and reopened",
        "```py\na = 1\nb = 2\nc = 3\nd = 4\n```",
        24,
        ["```py\na = 1\nb = 2\n```", "```py\nc = 3\nd = 4\n```"],
    ),
    (
        "one overlong code line is cut hard but stays code",
        "```\n" + "x" * 30 + "\n```",
        20,
        ["```\n" + "x" * 12 + "\n```", "```\n" + "x" * 12 + "\n```", "```\n" + "x" * 6 + "\n```"],
    ),
    ("no sentence end: cut at a space", "aaaa bbbb cccc dddd", 12, ["aaaa bbbb", "cccc dddd"]),
    ("no break at all: hard cut", "あ" * 25, 10, ["あ" * 10, "あ" * 10, "あ" * 5]),
]


@pytest.mark.parametrize(
    ("text", "limit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_split_reply(text: str, limit: int, expected: list[str]) -> None:
    assert split_reply(text, limit) == expected
    assert all(len(chunk) <= limit for chunk in split_reply(text, limit))


def test_real_sized_reply_keeps_every_character_and_every_block() -> None:
    sentences = [f"これは{i}番目の文です。" for i in range(300)]
    code = "```python\n" + "".join(f"print({i})\n" for i in range(40)) + "```"
    text = "".join(sentences[:130]) + "\n" + code + "\n" + "\n".join(sentences[130:])
    chunks = split_reply(text)
    assert len(chunks) >= 3
    assert all(0 < len(chunk) <= MESSAGE_LIMIT for chunk in chunks)
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")
    assert [chunk.count("```") % 2 for chunk in chunks] == [0] * len(chunks)
    for chunk in chunks:
        assert chunk.endswith(("。", "```")) or chunk is chunks[-1]


def test_a_code_block_over_the_limit_reopens_with_its_language() -> None:
    code = "```python\n" + "".join(f"value_{i} = {i}\n" for i in range(400)) + "```"
    chunks = split_reply(code)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert len(chunk) <= MESSAGE_LIMIT
        assert chunk.startswith("```python\n") and chunk.endswith("\n```")
    body = "".join(chunk.removeprefix("```python\n").removesuffix("```") for chunk in chunks)
    assert body == code.removeprefix("```python\n").removesuffix("```")
