"""The project's tokenizer encodes exactly as sentencepiece does (transformers 5 does not)."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from bot.models.demo import ensure_demo_model
from bot.models.tokenizers import IncrementalDecoder, SentencePieceTokenizer, load_tokenizer

PARITY_STRINGS = [
    "こんにちは",
    "ユーザー: 日本のおすすめの観光地を教えてください。<NL>システム: ",
    "システム: ",  # the trailing space matters to rinna's format
    "  二つの空白と 一つの空白  ",
    "改行\nを含む\n\n文",
    "ひらがなだけのぶんしょうです",
    "カタカナダケノブンショウデス",
    "鬱蒼とした薔薇の檸檬と麒麟、齟齬、醤油",
    "𠮷野家と髙橋さん",  # outside the BMP / rare variants
    "絵文字😊🎉🍣👍🏽👨‍👩‍👧",
    "記号!?「」『』（）…ー〜・※★♪→",
    "全角ＡＢＣ１２３　全角スペース",
    "Python 3.11 と GPU 24GB, OK!",
    "</s>を文字として書く<unk><pad>",
    "タブ\tと\u00a0NBSP",
    "",
    "ｶﾀｶﾅﾊﾝｶｸ",
    "数字 0123456789 と 2026年11月21日",
    "العربية と 한국어 と Ελληνικά",
    "長い" * 300,
]


@pytest.fixture(scope="module")
def demo_folder(model_cache):
    return ensure_demo_model(model_cache)


def test_loader_picks_sentencepiece_for_a_rinna_style_folder(demo_folder):
    assert isinstance(load_tokenizer(demo_folder), SentencePieceTokenizer)


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_ids_match_sentencepiece_exactly(demo_folder, text):
    reference = spm.SentencePieceProcessor(model_file=str(demo_folder / "spiece.model"))
    tokenizer = load_tokenizer(demo_folder)
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == reference.decode(reference.encode(text))


def test_special_ids_follow_rinna(demo_folder):
    tokenizer = load_tokenizer(demo_folder)
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 3)
    assert tokenizer.has_piece("<NL>")
    assert len(tokenizer.encode("<NL>")) == 1 or tokenizer.encode("<NL>")[-1] == 4
    assert "<NL>" in [tokenizer.sp.id_to_piece(i) for i in tokenizer.encode("a<NL>b")]


def test_unknown_characters_fall_back_to_bytes_and_round_trip(demo_folder):
    tokenizer = load_tokenizer(demo_folder)
    text = "齉龘靐"  # not in the training text
    ids = tokenizer.encode(text)
    assert 1 not in ids  # no <unk>
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", ["ひらがなだけ", "絵文字😊と🍣", "齉龘", "Hello 世界"])
def test_incremental_decoder_streams_every_token_and_adds_up(demo_folder, text):
    tokenizer = load_tokenizer(demo_folder)
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in tokenizer.encode(text)]
    assert "".join(deltas) == tokenizer.decode(tokenizer.encode(text))
    assert all("\ufffd" not in d for d in deltas)
    if text == "ひらがなだけ":  # kana-only text streams piece by piece, not in one lump
        assert sum(1 for d in deltas if d) > 1


def test_ids_past_the_tokenizers_end_decode_to_nothing(demo_folder):
    # Real models pad their embedding matrix past the tokenizer's vocabulary.
    tokenizer = load_tokenizer(demo_folder)
    ids = tokenizer.encode("こんにちは")
    assert tokenizer.decode([*ids, 31999, 50000]) == tokenizer.decode(ids)
