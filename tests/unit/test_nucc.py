"""The NUCC parser on tricky input. All text here and in tests/data/nucc/ was written for this
project in the corpus's format; none of it comes from the corpus."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from persona.cli import main
from persona.nucc import (
    NuccError,
    NuccOptions,
    NuccStats,
    clean_text,
    decode,
    iter_examples,
    make_examples,
    parse_text,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "nucc"


def turns(text: str, **options) -> list[list[tuple[str, str]]]:
    """Segments of (speaker, text) turns of every conversation, flattened over conversations."""
    conversations = parse_text(text, "t.txt", NuccOptions(**options))
    return [[(t.speaker, t.text) for t in seg] for c in conversations for seg in c.segments]


# Each case: NUCC-format lines in, the turns (by segment) out.
CASES = [
    pytest.param(
        "F001：こんにちは。\nM002：どうも。",
        [[("F001", "こんにちは。"), ("M002", "どうも。")]],
        id="two speakers",
    ),
    pytest.param(
        "F001：それで（うん）東京に（へえ）行ったの。\nM002：いいね。",
        [[("F001", "それで東京に行ったの。"), ("M002", "いいね。")]],
        id="two inline backchannels: no greedy wipe of the text between them",
    ),
    pytest.param(
        "F001：あ＜笑い＞そう＜間＞だね＜咳＞。\nM002：うん。",
        [[("F001", "あそうだね。"), ("M002", "うん。")]],
        id="annotations removed non-greedily",
    ),
    pytest.param(
        "F001：それは（うん（笑））そうだ。\nM002：ね。",
        [[("F001", "それはそうだ。"), ("M002", "ね。")]],
        id="nested backchannel",
    ),
    pytest.param(
        "F001：＊＊＊さんに会った。\nM002：＊＊＊って誰？",
        [[("F001", "〇〇さんに会った。"), ("M002", "〇〇って誰？")]],
        id="masked words",
    ),
    pytest.param(
        "F001：：はい。\nM002：：：そう。",
        [[("F001", "はい。"), ("M002", "そう。")]],
        id="doubled colon",
    ),
    pytest.param(
        "　F001：　はい　そうです。\nM002：OK Google　って言った。",
        [[("F001", "はいそうです。"), ("M002", "OK Googleって言った。")]],
        id="full-width spaces dropped, ASCII words keep theirs",
    ),
    pytest.param(
        "F001：駅の前に\n大きな木があって、\nM002：うん。",
        [[("F001", "駅の前に大きな木があって、"), ("M002", "うん。")]],
        id="continuation lines",
    ),
    pytest.param(
        "F001：そうそう\nF001：だからね。\nF001：困った。\nM002：へえ。",
        [[("F001", "そうそう だからね。困った。"), ("M002", "へえ。")]],
        id="same-speaker run merged",
    ),
    pytest.param(
        "F001：すみません。\nＸ：はい、ご注文は？\n少々お待ちください。\nF001：コーヒーを。\nM002：僕も。",
        [[("F001", "すみません。コーヒーを。"), ("M002", "僕も。")]],
        id="non-participant Ｘ and its continuation dropped",
    ),
    pytest.param(
        "F001：もしもし。\nX：はい。\nM002：誰？",
        [[("F001", "もしもし。"), ("M002", "誰？")]],
        id="half-width X dropped",
    ),
    pytest.param(
        "F001：あのね。\nM002：（うん）\nもう一回言って。\nF001：いいよ。",
        [[("F001", "あのね。"), ("M002", "もう一回言って。"), ("F001", "いいよ。")]],
        id="backchannel-only line still sets the speaker of the next continuation",
    ),
    pytest.param(
        "F001：始めるね。\n％ｃｏｍ：ここで電話が鳴る\nそれでね。\nM002：うん。",
        [[("F001", "始めるね。それでね。"), ("M002", "うん。")]],
        id="comment inside a turn",
    ),
    pytest.param(
        "F001：一つ目。\nM002：二つ目。\n＜中略＞\nF001：三つ目。\nM002：四つ目＜中略＞五つ目。\nF001：六つ目。",
        [
            [("F001", "一つ目。"), ("M002", "二つ目。")],
            [("F001", "三つ目。"), ("M002", "四つ目")],
            [("M002", "五つ目。"), ("F001", "六つ目。")],
        ],
        id="＜中略＞ cuts on its own line and inline",
    ),
    pytest.param(
        "Ｆ００１：全角のコード。\nＭ００２：はい。",
        [[("F001", "全角のコード。"), ("M002", "はい。")]],
        id="full-width speaker codes",
    ),
    pytest.param(
        "F001：閉じない＜笑い。\nM002：閉じない（うん。",
        [[("F001", "閉じない笑い。"), ("M002", "閉じないうん。")]],
        id="unbalanced brackets lose only the bracket",
    ),
    pytest.param(
        "F001：はい。\n＠ＥＮＤ\nM002：終わりのあと。",
        [[("F001", "はい。")]],
        id="text after ＠ＥＮＤ",
    ),
    pytest.param(
        "説明の行。\nF001：はい。\nM002：うん。",
        [[("F001", "はい。"), ("M002", "うん。")]],
        id="text before any speaker skipped",
    ),
    pytest.param(
        "F001：一。\nM002：二。\n＠データ２\nF003：三。\nM004：四。",
        [[("F001", "一。"), ("M002", "二。")], [("F003", "三。"), ("M004", "四。")]],
        id="a new ＠データ header starts a new conversation",
    ),
    pytest.param(
        "F001：一。\nM002：二。\n＠ＥＮＤ\n＠参加者F003：女性\nF003：三。\nM004：四。",
        [[("F001", "一。"), ("M002", "二。")], [("F003", "三。"), ("M004", "四。")]],
        id="a header after ＠ＥＮＤ starts a new conversation",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_turns(text: str, expected: list[list[tuple[str, str]]]) -> None:
    assert turns(text) == expected


@pytest.mark.parametrize("end", ["＠ＥＮＤ", "@ＥＮＤ", "＠Ｅｎｄ", "@END", "＠end"])
def test_end_marker_variants(end: str) -> None:
    stats = NuccStats()
    parse_text(f"F001：はい。\nM002：うん。\n{end}\nF001：余分。", options=None, stats=stats)
    assert stats.skipped["end marker ＠ＥＮＤ"] == 1
    assert stats.skipped["text after ＠ＥＮＤ"] == 1


HEADER = """＠データ１（約１０分）
＠収集年月日２０２４年１月２日
＠場所：公園
＠参加者F001：女性２０代、東京都出身
@参加者M002；男性３０代
参加者F003 女性５０代
＠参加者間の関係：近所の人
F001：こんにちは。
M002：やあ。
F003：いい天気ね。
"""


def test_header_variants() -> None:
    stats = NuccStats()
    (conv,) = parse_text(HEADER, "h.txt", stats=stats)
    assert conv.participants == {
        "F001": "女性20代、東京都出身",
        "M002": "男性30代",
        "F003": "女性50代",
    }
    assert conv.relation == "近所の人"
    assert conv.header["収集年月日"] == "2024年1月2日"
    assert conv.header["場所"] == "公園"
    assert conv.header["データ"].startswith("1")
    assert stats.skipped["header ＠"] == 7
    assert stats.cleaned["header without ＠"] == 1
    assert [t.text for t in conv.turns] == ["こんにちは。", "やあ。", "いい天気ね。"]


@pytest.mark.parametrize(
    "line",
    [
        "データ１（約３５分）",
        "収集年月日：２００１年１０月",
        "場所：自宅",
        "参加者F001：女性",
        "参加者M002；男性",
    ],
)
def test_headers_without_at_sign(line: str) -> None:
    stats = NuccStats()
    (conv,) = parse_text(f"{line}\nF001：はい。\nM002：うん。", stats=stats)
    assert [t.text for t in conv.turns] == ["はい。", "うん。"]
    assert stats.cleaned["header without ＠"] == 1


@pytest.mark.parametrize(
    "relation_line",
    ["＠参加者の関係：友人", "＠参加者間の関係；友人", "参加者の関係：友人", "＠参加者の関係友人"],
)
def test_relation_spellings(relation_line: str) -> None:
    (conv,) = parse_text(f"{relation_line}\nF001：はい。\nM002：うん。")
    assert conv.relation == "友人"
    assert all("友人" not in t.text for t in conv.turns)


def test_undeclared_speaker_is_kept_and_counted() -> None:
    stats = NuccStats()
    (conv,) = parse_text("＠参加者F001：女性\nF001：はい。\nM009：誰？\nM009：僕。", stats=stats)
    assert [t.speaker for t in conv.turns] == ["F001", "M009"]
    assert stats.cleaned["speaker not in header"] == 1


def test_four_speakers_examples_keep_order_and_window() -> None:
    text = "F001：一。\nM002：二。\nF003：三。\nM004：四。\nF001：五。\nM002：六。"
    (conv,) = parse_text(text)
    assert conv.speakers == {"F001", "M002", "F003", "M004"}
    examples = list(make_examples(conv, context_turns=2))
    assert len(examples) == 5
    assert examples[0] == {
        "context": [{"speaker": "F001", "text": "一。"}],
        "reply": {"speaker": "M002", "text": "二。"},
        "source": "<text>",
        "conversation": 0,
    }
    last = examples[-1]
    assert [c["text"] for c in last["context"]] == ["四。", "五。"]
    assert last["reply"] == {"speaker": "M002", "text": "六。"}


def test_examples_never_cross_a_cut() -> None:
    (conv,) = parse_text("F001：一。\nM002：二。\n＜中略＞\nF001：三。\nM002：四。")
    examples = list(make_examples(conv, context_turns=10))
    assert [[c["text"] for c in e["context"]] for e in examples] == [["一。"], ["三。"]]


def test_kept_nonparticipant_is_context_but_never_a_reply() -> None:
    text = "F001：すみません。\nＸ：はい。\nF001：水をください。\nＸ：どうぞ。"
    (conv,) = parse_text(text, options=NuccOptions(keep_nonparticipant=True))
    assert [t.speaker for t in conv.turns] == ["F001", "X", "F001", "X"]
    examples = list(make_examples(conv, 4))
    assert [e["reply"]["speaker"] for e in examples] == ["F001"]
    assert [c["speaker"] for c in examples[0]["context"]] == ["F001", "X"]


def test_mask_can_be_kept() -> None:
    assert turns("F001：＊＊＊です。\nM002：はい。", mask=None)[0][0] == ("F001", "＊＊＊です。")


def test_clean_text_counts_what_it_removed() -> None:
    counts: Counter[str] = Counter()
    assert clean_text("a（うん）b＜笑い＞c＊＊＊", "〇〇", counts) == ["abc〇〇"]
    assert counts["backchannel （…）"] == 1
    assert counts["annotation ＜…＞"] == 1
    assert counts["masked ＊＊＊"] == 1


def test_skip_reasons_are_counted() -> None:
    stats = NuccStats()
    text = (
        "＠場所：家\n\n％ｃｏｍ：メモ\n前置き\nF001：＜笑い＞\nＸ：はい。\nM002：うん。\n＠ＥＮＤ"
    )
    parse_text(text, stats=stats)
    assert stats.skipped == Counter(
        {
            "header ＠": 1,
            "blank": 1,
            "comment ％ｃｏｍ": 1,
            "text before any speaker": 1,
            "nothing left after cleaning": 1,
            "non-participant Ｘ": 1,
            "end marker ＠ＥＮＤ": 1,
        }
    )
    assert stats.utterances == 1  # only M002's line kept any text


SAMPLE = "＠参加者F001：女性\nF001：今日は寒いですね。\nM002：本当に。"


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (SAMPLE.encode("utf-8"), "utf-8"),
        (b"\xef\xbb\xbf" + SAMPLE.encode("utf-8"), "utf-8"),
        (SAMPLE.encode("euc_jp"), "euc_jp"),
        (SAMPLE.encode("cp932"), "cp932"),
    ],
    ids=["utf-8", "utf-8 with BOM", "euc-jp", "shift_jis"],
)
def test_decode_detects_encoding(data: bytes, encoding: str) -> None:
    text, found = decode(data)
    assert text == SAMPLE
    assert found == encoding


def test_decode_refuses_garbage() -> None:
    with pytest.raises(NuccError):
        decode(bytes([0x80, 0xFF, 0xFE, 0x81, 0x00, 0xFF]) * 10)


def test_fixture_files_utf8_and_euc_jp() -> None:
    stats = NuccStats()
    examples = list(iter_examples([DATA], NuccOptions(context_turns=4), stats))
    assert stats.files == 2
    assert stats.encodings == Counter({"utf-8": 1, "euc_jp": 1})
    assert stats.conversations == 2
    assert stats.speakers == Counter({2: 1, 3: 1})
    assert stats.examples == len(examples) == 9

    utf8 = [e for e in examples if e["source"] == "data901.txt"]
    assert [e["reply"]["text"] for e in utf8] == [
        "うん、聞く聞く。",
        "〇〇っていう町に行ったの。すごく静かでよかったよ。",
        "へえ、いいね。あ、コーヒーを二つ。",
        "それでね、駅前に古いお店があって、そこのケーキがおいしかったの。",
        "いいね、行こう行こう。",
    ]
    assert [c["text"] for c in utf8[0]["context"]] == [
        "ねえ、この前の旅行の話なんだけど、聞いてくれる？"
    ]
    assert len(utf8[3]["context"]) == 4
    assert utf8[4]["context"] == [{"speaker": "M902", "text": "じゃあ今度いっしょに行こうよ。"}]

    euc = [e for e in examples if e["source"] == "data902.txt"]
    assert {e["reply"]["speaker"] for e in euc} == {"F903", "F904", "M905"}
    assert euc[2]["reply"]["text"] == "たぶん二十枚ぐらいです。"
    for example in examples:
        blob = json.dumps(example, ensure_ascii=False)
        for junk in ("＜", "（", "＊", "：", "％", "＠", "Ｘ"):
            assert junk not in blob


def test_cli_prepare_writes_jsonl_and_reports(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "in" / "broken.txt"
    bad.parent.mkdir()
    bad.write_bytes(bytes([0x80, 0xFF, 0xFE, 0x81]) * 8)
    out = tmp_path / "out" / "pairs.jsonl"
    assert main(["prepare", "nucc", str(DATA), str(bad), "-o", str(out), "--context", "2"]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 9
    assert all(len(json.loads(line)["context"]) <= 2 for line in lines)
    err = capsys.readouterr().err
    assert "files: 3" in err and "unreadable: 1" in err
    assert "examples: 9" in err
    assert "non-participant Ｘ: 2" in err
    assert "CC BY-NC-ND" in err


def test_cli_prepare_missing_path_is_an_error(tmp_path: Path, capsys) -> None:
    code = main(["prepare", "nucc", str(tmp_path / "nope"), "-o", str(tmp_path / "p.jsonl")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no such file or folder")
    assert not (tmp_path / "p.jsonl").exists()


def test_cli_prepare_without_examples_fails(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.txt").write_text("＠場所：家\n＠ＥＮＤ\n", encoding="utf-8")
    assert main(["prepare", "nucc", str(tmp_path), "-o", str(tmp_path / "p.jsonl")]) == 1
    assert "error: no examples" in capsys.readouterr().err
