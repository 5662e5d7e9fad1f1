"""Post-processing, with tables of realistic raw model outputs."""

from __future__ import annotations

import pytest

from bot.postprocess import (
    FALLBACK_REPLY,
    clean_partial,
    clean_reply,
    collapse_repetition,
    trim_to_sentence,
)
from bot.prompt_format import LINE, RINNA

PPO_LOOP = "ご質問ありがとうございます。" * 12 + "ご質問ありがとう"


@pytest.mark.parametrize(
    ("raw", "limit", "expected"),
    [
        ("東京タワーがおすすめです。", False, "東京タワーがおすすめです。"),
        ("はい。<NL>1. 京都<NL>2. 奈良", False, "はい。\n1. 京都\n2. 奈良"),
        ("そうですね。<NL>ユーザー: では次の質問です<NL>システム: はい", False, "そうですね。"),
        ("それはいいですね</s>", False, "それはいいですね"),
        ("システム: 自分のラベルから始まる返事", False, "自分のラベルから始まる返事"),
        ("了解です。ユーザー: 勝手に続けた", False, "了解です。"),
        (PPO_LOOP, True, "ご質問ありがとうございます。"),
        (
            "いいですね。楽しそう。いいですね。楽しそう。いいですね。楽しそう。",
            False,
            "いいですね。楽しそう。",
        ),
        ("はい。お手伝いします。具体的には、まず最初に", True, "はい。お手伝いします。"),
        ("切れたけど文の終わりがない返事", True, "切れたけど文の終わりがない返事"),
        ("", False, FALLBACK_REPLY),
        ("<NL><NL>", False, FALLBACK_REPLY),
        ("ユーザー: いきなり次のターン", False, FALLBACK_REPLY),
        ("ありがとうありがとうありがとうありがとうありがとう！", False, "ありがとう！"),
        ("壊れた\ufffd文字", False, "壊れた文字"),
        ("[CLS]特殊[SEP]トークン<|padding|>[PAD]", False, "特殊トークン"),
        ("行1<NL><NL><NL><NL>行2", False, "行1\n\n行2"),
        ("制御\x06文字\x1cと\u2028改行", False, "制御文字と\n改行"),
    ],
)
def test_clean_reply_rinna(raw, limit, expected):
    assert clean_reply(raw, RINNA.stop_strings, hit_token_limit=limit) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "四国は香川、徳島、愛媛、高知です。\nユーザー: ありがとう",
            "四国は香川、徳島、愛媛、高知です。",
        ),
        ("一行目\n二行目", "一行目\n二行目"),
        ("答えです<|endoftext|>ごみ", "答えです"),
    ],
)
def test_clean_reply_line(raw, expected):
    assert clean_reply(raw, LINE.stop_strings) == expected


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        ("こんにちは<N", "こんにちは"),
        ("こんにちは<NL>ユー", "こんにちは"),
        ("こんにちは<NL>", "こんにちは"),
        ("こんにちは。元気", "こんにちは。元気"),
        ("終わり</", "終わり"),
    ],
)
def test_partial_text_hides_a_half_written_marker(partial, expected):
    assert clean_partial(partial, RINNA.stop_strings) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A。B。A。B。", "A。B。"),
        ("同じ。同じ。同じ。", "同じ。"),
        ("違う。文。です。", "違う。文。です。"),
        ("ははは、面白い。", "ははは、面白い。"),  # short laughter survives
        ("草草草草草草", "草草草草草草"),  # single characters are not units
        ("はははははははは", "はははははははは"),
        ("1500000000000000001 と 121212121212", "1500000000000000001 と 121212121212"),
        ("<@1500000000000000001>さん", "<@1500000000000000001>さん"),
        ("すごいすごいすごいすごいすごい", "すごい"),
    ],
)
def test_collapse_repetition(text, expected):
    assert collapse_repetition(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("一文目。二文目の途中", "一文目。"),
        ("「はい。」と言った。そして", "「はい。」と言った。"),
        ("本当？まだ", "本当？"),
        ("終わりなし", "終わりなし"),
    ],
)
def test_trim_to_sentence(text, expected):
    assert trim_to_sentence(text) == expected
