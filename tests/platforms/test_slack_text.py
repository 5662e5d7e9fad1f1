"""Table-driven tests of the pure text functions: splitting by bytes, mrkdwn escaping, and
reading Slack markup."""

from __future__ import annotations

import pytest

from adapters.slack.text import (
    TEXT_LIMIT_BYTES,
    escape_mrkdwn,
    mentioned_user_ids,
    render_messages,
    split_message,
    to_plain_text,
)

A20 = "あ" * 20  # 60 bytes


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("こんにちは。", 60, ["こんにちは。"], id="fits"),
        pytest.param("", 60, [], id="empty"),
        pytest.param("  \n ", 60, [], id="only-whitespace"),
        pytest.param(
            "すごいですね！本当ですか？はい。",
            40,
            ["すごいですね！本当ですか？", "はい。"],
            id="sentence-ends-pack-greedily",
        ),
        pytest.param(
            "一つ目の文です。二つ目の文です。三つ目の文です。",
            50,
            ["一つ目の文です。二つ目の文です。", "三つ目の文です。"],
            id="kuten",
        ),
        pytest.param(
            "「はい。」と言った。次です。",
            36,
            ["「はい。」と言った。", "次です。"],
            id="closing-bracket-stays-with-its-sentence",
        ),
        pytest.param(
            "一行目です\n二行目です\n三行目です",
            40,
            ["一行目です\n二行目です", "三行目です"],
            id="line-breaks",
        ),
        pytest.param("あ" * 50, 60, [A20, A20, "あ" * 10], id="hard-cut-between-characters"),
        pytest.param(
            "あいうえおかきくけこ、さしすせそたちつてと" + "な" * 10,
            60,
            ["あいうえおかきくけこ、", "さしすせそたちつてと" + "な" * 10],
            id="soft-break-after-touten",
        ),
        pytest.param("&" * 20, 40, ["&" * 8, "&" * 8, "&" * 4], id="escaped-size-counts"),
        pytest.param("😀" * 12, 40, ["😀" * 10, "😀" * 2], id="four-byte-characters"),
        pytest.param(
            "前置きです。\n```\nprint(1)\nprint(2)\n```\nおわり。",
            40,
            ["前置きです。", "```\nprint(1)\nprint(2)\n```\nおわり。"],
            id="code-block-kept-whole",
        ),
        pytest.param(
            "```python\n" + "\n".join(f"x{i} = {i}" for i in range(6)) + "\n```",
            40,
            [
                "```python\nx0 = 0\nx1 = 1\nx2 = 2\n```",
                "```python\nx3 = 3\nx4 = 4\nx5 = 5\n```",
            ],
            id="oversized-code-block-refenced",
        ),
        pytest.param(
            "```\n" + "y" * 70 + "\n```",
            40,
            [
                "```\n" + "y" * 32 + "\n```",
                "```\n" + "y" * 32 + "\n```",
                "```\n" + "y" * 6 + "\n```",
            ],
            id="oversized-code-line",
        ),
        pytest.param(
            "文です。```\n未完のコード",
            60,
            ["文です。```\n未完のコード"],
            id="unclosed-code-block-while-streaming",
        ),
    ],
)
def test_split_message(text, limit, expected):
    assert split_message(text, limit) == expected


@pytest.mark.parametrize(
    "text",
    [
        "これは長い文章です。" * 400,
        ("段落です。" * 30 + "\n\n") * 20,
        "説明。\n```\n" + "code line\n" * 500 + "```\nあと。",
        "<!channel> & <@U1> " * 400,
        "改行なしでずっと続く" * 500,
    ],
    ids=["sentences", "paragraphs", "big-code", "markup", "no-breaks"],
)
def test_every_rendered_message_fits_and_keeps_fences_balanced(text):
    messages = render_messages(text)
    assert len(messages) > 1
    for message in messages:
        assert 0 < len(message.encode()) <= TEXT_LIMIT_BYTES
        assert message.count("```") % 2 == 0
        assert "<" not in message and ">" not in message


def test_prose_is_only_cut_never_changed():
    text = "これは長い文章です。" * 400 + "\n最後の行です！"
    assert "".join(split_message(text)) == text.replace("\n", "")


def test_a_limit_too_small_for_a_fenced_piece_is_refused():
    with pytest.raises(ValueError, match="at least"):
        split_message("text", 10)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!channel> 集合", "&lt;!channel&gt; 集合"),
        ("<!here|here>", "&lt;!here|here&gt;"),
        ("<@U123ABC> さん", "&lt;@U123ABC&gt; さん"),
        ("<#C123|general>", "&lt;#C123|general&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;すでに&gt;", "&amp;lt;すでに&amp;gt;"),
        ("普通の日本語です。*太字* と `コード`", "普通の日本語です。*太字* と `コード`"),
    ],
)
def test_escape_mrkdwn(text, expected):
    assert escape_mrkdwn(text) == expected


NAMES = {"U0BOB": "ボブ"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@UBOT> こんにちは", "こんにちは"),
        ("こんにちは <@UBOT> さん", "こんにちは さん"),
        ("<@UBOT|bot> やあ", "やあ"),
        ("<@U0BOB> に聞いて", "@ボブ に聞いて"),
        ("<@U0CAROL|carol> と <@U0DAVE>", "@carol と @U0DAVE"),
        ("<#C0CHAN|general> で", "#general で"),
        ("<#C0CHAN> で", "#C0CHAN で"),
        ("<!here> <!channel> <!everyone>", "@here @channel @everyone"),
        ("<!subteam^S123|@devs> へ", "@devs へ"),
        ("<https://example.com> を見て", "https://example.com を見て"),
        ("<https://example.com|example.com>", "https://example.com"),
        ("<https://example.com/a|この記事>", "この記事 (https://example.com/a)"),
        ("<mailto:a@example.com|a@example.com>", "a@example.com"),
        ("1 &lt; 2 &amp;&amp; 3 &gt; 2", "1 < 2 && 3 > 2"),
        ("<@UBOT>", ""),
    ],
)
def test_to_plain_text(text, expected):
    assert to_plain_text(text, bot_user_id="UBOT", names=NAMES) == expected


def test_mentioned_user_ids_in_order_without_repeats():
    text = "<@U2> <@U1|one> <@U2> <@W3> <#C1> <!here>"
    assert mentioned_user_ids(text) == ["U2", "U1", "W3"]
