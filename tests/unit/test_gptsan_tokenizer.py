"""GPTSAN's tokenizer against transformers 4.40.2's GPTSanJapaneseTokenizer
(tests/data/gptsan/tokenizer_reference.json, written by make_reference.py): ids exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.models.gptsan.tokenizer import (
    GPTSanTokenizer,
    normalise,
    prefix_token_types,
    read_vocabulary,
    scan,
    tokens_to_text,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "gptsan"
REFERENCE = json.loads((DATA / "tokenizer_reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer() -> GPTSanTokenizer:
    return GPTSanTokenizer.from_folder(DATA)


@pytest.mark.parametrize("case", REFERENCE["encode"], ids=lambda c: repr(c["text"])[:30])
def test_encodes_and_decodes_like_transformers_4(tokenizer, case):
    encoded = tokenizer.encode_with_prefix(case["text"])
    assert encoded.input_ids == case["input_ids"]
    assert encoded.token_type_ids == case["token_type_ids"]
    assert tokenizer.decode(encoded.input_ids) == case["decoded"]


@pytest.mark.parametrize("case", REFERENCE["prefixed"], ids=lambda c: c["prefix_text"])
def test_a_prefix_gets_token_type_1_up_to_the_segmenter(tokenizer, case):
    encoded = tokenizer.encode_with_prefix(case["text"], case["prefix_text"])
    assert encoded.input_ids == case["input_ids"]
    assert encoded.token_type_ids == case["token_type_ids"]


@pytest.mark.parametrize("case", REFERENCE["decode"], ids=lambda c: str(c["ids"])[:30])
def test_decodes_byte_runs_bag_of_token_and_markup_like_transformers_4(tokenizer, case):
    assert tokenizer.decode(case["ids"]) == case["decoded"]


def test_the_reference_covers_what_the_issue_lists(tokenizer):
    """Spaces, line breaks, tabs, dashes, emoji, byte fallback, both symbol classes, the
    segmenter inside a text, and a candidate that loses to a lower id."""
    tokens = [t for case in REFERENCE["encode"] for t in tokenizer.tokenize(case["text"])]
    for token in ("<SP>", "<BR>", "<TAB>", "<KIGOU>", "<U2000U2BFF>", "<|segmenter|>"):
        assert token in tokens
    assert any(t.startswith("<|emoji") for t in tokens)
    assert any(t.startswith("<|byte") for t in tokens)
    assert "ー" in normalise("—−", {})
    # "今は" is in the vocabulary but "今" has the lower id, so "今" wins.
    assert tokenizer.tokenize("今は")[0] == "今"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("あ\nい", [["あ"], ["い"]]),
        ("です,デス\n,\nx", [["です", "デス"], [","], ["x"]]),
        ("a,b,c\n", [["a", "b", "c"]]),
    ],
)
def test_vocabulary_lines_are_spellings_of_one_token(text, expected):
    assert read_vocabulary(text) == expected


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("あいう", ["あい", "う"]),  # three characters ahead at most; lowest id wins
        ("<SP>あ", ["<SP>", "あ"]),
        ("<Sあ", ["<|byte60|>", "S", "あ"]),  # "<" that starts no markup: a byte
        ("é", ["<|byte195|>", "<|byte169|>"]),
        ("§→", ["<KIGOU>", "<U2000U2BFF>"]),
    ],
)
def test_scan_table(text, tokens):
    vocab = {"あい": 0, "あいう": 5, "あ": 1, "う": 2, "<SP>": 3, "S": 9}
    assert scan(text, vocab, longest=4) == tokens


@pytest.mark.parametrize(
    ("tokens", "text"),
    [
        (["<|byte227|>", "<|byte129|>", "<|byte130|>"], "あ"),
        (["犬", "<|bagoftoken|>"], "犬犬犬犬"),
        (["<|bagoftoken|>"], ""),
        (["<SP>", "<BR>", "<TAB>", "<|endoftext|>", "<|emoji1|>"], " \n\t😀"),
    ],
)
def test_tokens_to_text_table(tokens, text):
    assert tokens_to_text(tokens, {"<|emoji1|>": "😀"}) == text


@pytest.mark.parametrize(
    ("ids", "types"),
    [
        ([1, 2, 9, 3], [1, 1, 0, 0]),
        ([9, 3], [0, 0]),
        ([1, 2], [0, 0]),
        ([1, 9, 2, 9], [1, 0, 0, 0]),
    ],
)
def test_token_types_mark_the_prefix_before_the_first_segmenter(ids, types):
    assert prefix_token_types(ids, 9) == types
