"""Post-processing, with tables of realistic raw model outputs."""

from __future__ import annotations

import pytest

from bot.chat.postprocess import (
    FALLBACK_REPLY,
    clean_partial,
    clean_reply,
    collapse_repetition,
    trim_to_sentence,
)
from bot.models.prompt_formats import LINE, RINNA
from tests.model_families import GPT_NEOX_JAPANESE_TAGS

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
        # A sentence repeated with others in between keeps its first occurrence...
        (
            "素敵な一日を過ごしてください。良い一日を…。素敵な一日を過ごしてください。",
            "素敵な一日を過ごしてください。良い一日を…。",
        ),
        (
            "お役に立てて嬉しいです。他に質問はありますか？お役に立てて嬉しいです！",
            "お役に立てて嬉しいです。他に質問はありますか？",
        ),
        (
            "京都に行きました。\n奈良にも行きました。\n京都に行きました。",
            "京都に行きました。\n奈良にも行きました。\n",
        ),
        # ...but short interjections and answers may come back (under six letters).
        ("はい。そうですね、行きましょう。はい。", "はい。そうですね、行きましょう。はい。"),
        ("ありがとう！楽しかったです。ありがとう！", "ありがとう！楽しかったです。ありがとう！"),
        ("なるほど。京都ですね。なるほど。", "なるほど。京都ですね。なるほど。"),
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


# What abeja's GPTNeoXJapaneseTokenizer declares: the tags tests/model_families.py builds into
# its tiny vocabulary, plus its special, a byte and an emoji token.
ABEJA_TOKENS = frozenset(
    {*GPT_NEOX_JAPANESE_TAGS, "<|startoftext|>", "<|endoftext|>", "<|byte10|>", "<|emoji1|>"}
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("詳しくは<URL>をご覧ください。", "詳しくはをご覧ください。"),
        ("<DATE>に開催します<KIGOU>楽しみですね<BLOCK>", "に開催します楽しみですね"),
        ("お問い合わせは<EMAIL>か<TEL>まで、<PRICE>です。", "お問い合わせはかまで、です。"),
        ("記号<U2000U2BFF>の代わり", "記号の代わり"),
        ("はい<SP>いいえ<TAB>たぶん", "はい いいえ たぶん"),
        ("一行目<BR>二行目", "一行目\n二行目"),
        ("<URL>", FALLBACK_REPLY),
        # Tag-shaped leftovers the model invents, whatever the tokenizer declares.
        ("‹回答者>はい、そうです。", "はい、そうです。"),
        ("<回答>京都です。</回答>", "京都です。"),
        ("<|im_end|>終わり<|byte7|>", "終わり"),
        # Text that merely uses angle brackets stays.
        ("<@1500000000000000001>さん、1 < 2 > 0 です (>_<) <3", None),
        ("<https://example.com> を見て、<:smile:12345> <#123>", None),
        ("＜お知らせ＞明日は休みです。〈重要〉", None),
        ("C++ なら std::vector<int> や List<String> です。", None),  # code keeps its brackets
        ("例:\n```\n<div>こんにちは</div>\n```\nと `<p>` です。", None),
    ],
)
def test_clean_reply_removes_declared_and_tag_shaped_tokens(raw, expected):
    assert clean_reply(raw, LINE.stop_strings, special_tokens=ABEJA_TOKENS) == (expected or raw)


def test_streaming_hides_a_half_written_placeholder():
    assert (
        clean_partial("詳しくは<UR", LINE.stop_strings, special_tokens=ABEJA_TOKENS) == "詳しくは"
    )
    assert clean_partial("1 < 2", LINE.stop_strings, special_tokens=ABEJA_TOKENS) == "1 < 2"
