"""Every model family in the catalogue loads and replies through the real pipeline, offline.

Each family is a tiny model built by tests/model_families.py with the real family's classes,
tokenizer files and special ids (rinna's GPTNeoX + sentencepiece is the demo model, covered by
test_pipeline.py). The app is bootstrapped for real and loads the folder the way a user's
`MODEL=/path/to/folder` is loaded: no `bot_model.json`, so everything comes from the files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as ReferenceTokenizer

from bot.app.bootstrap import bootstrap
from bot.chat.postprocess import FALLBACK_REPLY
from bot.models.catalogue import find_entry
from bot.models.prompt_formats import FORMATS, Turn
from bot.models.tokenizers import (
    HFTokenizer,
    IncrementalDecoder,
    SentencePieceTokenizer,
    load_tokenizer,
)
from tests.conftest import message
from tests.integration.test_batching import QUESTIONS, ask_held
from tests.integration.test_pipeline import ask
from tests.model_families import (
    FAMILIES,
    FAMILY_BY_KEY,
    Family,
    FamilyFolders,
    train_byte_level_bpe,
    write_bpe_tokenizer,
)
from tests.unit.test_tokenizer import PARITY_STRINGS

# What a reply must never show: special tokens as text, newline markers, an invented turn,
# half-decoded bytes, sentencepiece's rendering of <unk>.
JUNK = (
    "<NL>",
    "<BR>",
    "<SP>",
    "</s>",
    "<s>",
    "<unk>",
    "<pad>",
    "[PAD]",
    "<|endoftext|>",
    "<|padding|>",
    "<|startoftext|>",
    "<|byte",
    "ユーザー:",
    "システム:",
    "\ufffd",
    "⁇",
)
FAMILY_IDS = [family.key for family in FAMILIES]


@pytest.fixture(scope="session")
def family_folders(tmp_path_factory: pytest.TempPathFactory) -> FamilyFolders:
    return FamilyFolders(tmp_path_factory.mktemp("families"))


def tokenizer_kind(tokenizer) -> str:
    if isinstance(tokenizer, SentencePieceTokenizer):
        return "sentencepiece"
    assert isinstance(tokenizer, HFTokenizer)
    if type(tokenizer.hf).__name__ == "GPTNeoXJapaneseTokenizer":
        return "gpt-neox-japanese"
    return "bpe"


def expected_ids(family: Family, folder: Path) -> dict[str, int]:
    """The special ids the bot must use: the family's real ones (the catalogue's), except for
    abeja, whose tiny vocabulary ends earlier than 31999; its bos = eos is the last id there."""
    if family.key == "abeja-gpt-neox-japanese":
        last = len((folder / "vocab.txt").read_text(encoding="utf-8").splitlines()) - 1
        return {"eos": last, "pad": last}
    return {
        "line-gpt-neox": {"bos": 2, "eos": 2, "pad": 2},
        "open-calm": {"bos": 0, "eos": 0, "pad": 1},
        "rinna-gpt2": {"bos": 1, "eos": 2, "pad": 3},
        "line-gpt2": {"bos": 1, "eos": 2, "pad": 3},
        "yellowback-gpt-neo": {"bos": 1000, "eos": 1000, "pad": 1000},
    }[family.key]


def reference_encode(family: Family, folder: Path, text: str) -> list[int]:
    """How the model's own tooling encodes `text`: sentencepiece itself for spiece.model folders
    (lower-cased first where tokenizer_config.json says so), the `tokenizers` library on the
    shipped tokenizer.json, and transformers' GPTNeoXJapaneseTokenizer (the only implementation
    of abeja's scheme) on vocab.txt + emoji.json."""
    if family.tokenizer_kind == "sentencepiece":
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
        return sp.encode(text.lower() if config.get("do_lower_case") else text)
    if family.tokenizer_kind == "bpe":
        reference = ReferenceTokenizer.from_file(str(folder / "tokenizer.json"))
        return reference.encode(text, add_special_tokens=False).ids
    from transformers import GPTNeoXJapaneseTokenizer

    reference = GPTNeoXJapaneseTokenizer(str(folder / "vocab.txt"), str(folder / "emoji.json"))
    return reference.encode(text, add_special_tokens=False)


# --- the whole pipeline, one family at a time ------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
async def test_each_family_loads_and_replies_through_the_pipeline(make_app, family_folders, family):
    folder = family_folders.folder(family.key)
    assert not (folder / "bot_model.json").exists()  # like a real download
    app = await make_app(model=str(folder), temperature=0, max_new_tokens=16)

    for text in ("こんにちは", "今日はいい天気ですね。Hello!"):
        sink = await ask(app, text)
        assert sink.final and sink.final != FALLBACK_REPLY, family.key
        for junk in JUNK:
            assert junk not in sink.final, (family.key, junk, sink.final)
    conversation = app.repository.active_conversation(message("x").key)
    roles = [m.role for m in app.repository.recent_messages(conversation)]
    assert roles == ["user", "assistant", "user", "assistant"]

    loaded = app.worker.current
    assert type(loaded.model).__name__ == family.model_class
    assert tokenizer_kind(loaded.tokenizer) == family.tokenizer_kind
    tokenizer = loaded.tokenizer
    ids = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id, "pad": tokenizer.pad_id}
    assert {k: ids[k] for k in expected_ids(family, folder)} == expected_ids(family, folder)
    assert loaded.prompt_format.name == family.prompt_format
    assert loaded.prompt_format.newline == family.newline
    assert not loaded.is_demo and loaded.context_length == 1024
    assert loaded.parameters < 400_000


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_each_family_stands_for_what_the_catalogue_says(family):
    """The tiny model uses the class, tokenizer kind and prompt format of the entries it stands
    for, and the special ids the catalogue lists for them."""
    for name in family.stands_for:
        entry = find_entry(name)
        assert entry is not None, name
        assert (entry.family, entry.tokenizer, entry.prompt_format) == (
            family.model_class,
            family.tokenizer_kind,
            family.prompt_format,
        )
        if family.key != "abeja-gpt-neox-japanese":  # 31999 needs the real 32k vocabulary
            ours = {**expected_ids(family, Path()), "unk": 0}
            assert {k: ours[k] for k in entry.special_ids} == entry.special_ids, name


# --- the tokenizers, against each family's reference -----------------------------------------


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_each_family_encodes_like_its_reference_tokenizer(family_folders, family):
    folder = family_folders.folder(family.key)
    tokenizer = load_tokenizer(folder)
    assert tokenizer_kind(tokenizer) == family.tokenizer_kind
    mismatches = [
        text
        for text in PARITY_STRINGS
        if tokenizer.encode(text) != reference_encode(family, folder, text)
    ]
    assert mismatches == []


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_each_family_writes_newlines_the_way_its_model_reads_them(family_folders, family):
    """The prompt's newlines reach the model: LINE's as a real newline, abeja's as its `<BR>`
    token (its tokenizer writes "\\n" that way itself, so the prompt keeps "\\n")."""
    folder = family_folders.folder(family.key)
    tokenizer = load_tokenizer(folder)
    prompt = FORMATS[family.prompt_format].render(
        [Turn("user", "こんにちは"), Turn("assistant", "はい。"), Turn("user", "元気？")]
    )
    assert "\n" in prompt
    ids = tokenizer.encode(prompt)
    if family.prompt_format == "line":
        assert tokenizer.decode(ids) == prompt
    if family.tokenizer_kind == "gpt-neox-japanese":
        br = tokenizer.hf.convert_tokens_to_ids("<BR>")
        assert ids.count(br) == prompt.count("\n")
        assert tokenizer.decode(ids) == prompt


def test_line_special_ids_come_from_config_json(family_folders):
    """LINE 3.6b's sentencepiece model says bos 1, pad 3; its config.json (bos = eos = pad = 2)
    is what the model was trained with, and wins."""
    tokenizer = load_tokenizer(family_folders.folder("line-gpt-neox"))
    assert (tokenizer.sp.bos_id(), tokenizer.sp.eos_id(), tokenizer.sp.pad_id()) == (1, 2, 3)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (2, 2, 2)


def test_rinna_gpt2_lower_cases_its_input(family_folders):
    """rinna's GPT-2 vocabulary has no upper-case pieces; `do_lower_case` in its
    tokenizer_config.json is honoured, so "Hello GPU" is not a run of <unk>."""
    tokenizer = load_tokenizer(family_folders.folder("rinna-gpt2"))
    assert tokenizer.lower_case
    assert tokenizer.encode("Hello GPU OK") == tokenizer.encode("hello gpu ok")
    assert tokenizer.sp.unk_id() not in tokenizer.encode("Hello GPU OK")
    assert tokenizer.decode(tokenizer.encode("Hello GPU")) == "hello gpu"


def test_lower_casing_keeps_markup_that_is_one_piece(model_cache):
    """Special pieces such as rinna's `<NL>` are kept as written, as transformers 4 kept special
    tokens; other text in angle brackets is lower-cased like the rest."""
    from bot.models.demo import ensure_demo_model

    folder = ensure_demo_model(model_cache)
    tokenizer = SentencePieceTokenizer(folder / "spiece.model", lower_case=True)
    nl = tokenizer.sp.piece_to_id("<NL>")
    assert nl in tokenizer.encode("A<NL>B")
    assert tokenizer.encode("A<NL>B<TAG>") == tokenizer.sp.encode("a<NL>b<tag>")


def test_abeja_tokenizer_decodes_characters_spelt_in_bytes(family_folders):
    """GPTNeoXJapaneseTokenizer decodes each <|byteN|> token alone (every such character became
    U+FFFD); the bot joins them, streaming included, and keeps the emoji and variant tags."""
    tokenizer = load_tokenizer(family_folders.folder("abeja-gpt-neox-japanese"))
    text = "齉龘と𠮷野家 で😊、慶應\nです"
    ids = tokenizer.encode(text)
    byte_ids = [i for i in ids if tokenizer.hf.ids_to_tokens[i][0].startswith("<|byte")]
    assert len(byte_ids) >= 10  # the rare characters really are spelt in bytes
    assert tokenizer.decode(ids) == "齉龘と𠮷野家 で😊、慶応\nです"  # 慶應 and 慶応 share an id
    decoder = IncrementalDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert "".join(deltas) == tokenizer.decode(ids)
    assert all("\ufffd" not in d for d in deltas)


# --- tokenizer.json is used as shipped, whatever class tokenizer_config.json names ----------------


@pytest.fixture(scope="module")
def trained_bpe():
    return {
        style: train_byte_level_bpe(
            specials_first=["<|endoftext|>", "<|padding|>"],
            specials_last=[],
            gpt_neo_style=style,
        )
        for style in (False, True)
    }


@pytest.mark.parametrize("gpt_neo_style", [False, True], ids=["nfc", "nfkc-prefix-space"])
@pytest.mark.parametrize(
    "tokenizer_class", ["PreTrainedTokenizerFast", "GPTNeoXTokenizer", "GPT2Tokenizer"]
)
def test_tokenizer_json_is_used_as_shipped(tmp_path, trained_bpe, tokenizer_class, gpt_neo_style):
    """transformers 5's GPTNeoXTokenizer and GPT2Tokenizer rebuild normalizer and pre-tokenizer
    from their defaults; the bot must encode as the file says (NFKC folds full-width and
    half-width forms, common in Japanese text; a prefix space changes the first token)."""
    special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    write_bpe_tokenizer(
        tmp_path, trained_bpe[gpt_neo_style], tokenizer_class=tokenizer_class, special=special
    )
    tokenizer = load_tokenizer(tmp_path)
    reference = ReferenceTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in PARITY_STRINGS:
        assert tokenizer.encode(text) == reference.encode(text, add_special_tokens=False).ids, text
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=False)
    assert (tokenizer.bos_id, tokenizer.eos_id) == (0, 0)


# --- how the prompt format is chosen for a folder without bot_model.json ----------------------


async def test_a_renamed_line_folder_needs_prompt_format_line(
    make_app, make_settings, family_folders, tmp_path
):
    """A LINE folder is recognised by its name; under another name it is a plain model unless
    PROMPT_FORMAT=line is set, which the production loader passes through."""
    renamed = tmp_path / "my-model"
    renamed.symlink_to(family_folders.folder("line-gpt-neox"), target_is_directory=True)
    plain = await make_app(model=str(renamed), temperature=0, max_new_tokens=8)
    assert plain.worker.current.prompt_format.name == "plain"

    settings = make_settings(
        model=str(renamed),
        prompt_format="line",
        temperature=0,
        max_new_tokens=8,
        database_url=f"sqlite:///{tmp_path / 'line.sqlite3'}",
    )
    app = bootstrap(settings)  # the real loader, with settings.prompt_format
    try:
        await app.start()
        loaded = app.worker.current
        assert loaded.prompt_format.name == "line" and loaded.prompt_format.newline == "\n"
        assert (loaded.tokenizer.bos_id, loaded.tokenizer.eos_id) == (2, 2)
        sink = await ask(app, "こんにちは")
        assert sink.final and sink.final != FALLBACK_REPLY
    finally:
        await app.close()


# --- batching on a family that needs position ids ------------------------------------------------


async def test_gpt2_batched_reply_equals_the_same_request_alone(make_app, family_folders, caplog):
    """GPT-2 has learned absolute positions: with left padding each row's positions must start
    at its first real token, or a batched reply differs from the same request alone."""
    folder = family_folders.folder("line-gpt2")
    app = await make_app(model=str(folder), temperature=0, max_new_tokens=16, max_batch_size=8)
    assert type(app.worker.current.model).__name__ == FAMILY_BY_KEY["line-gpt2"].model_class
    alone = [(await ask(app, q, channel=f"alone{i}")).final for i, q in enumerate(QUESTIONS)]

    caplog.set_level(logging.INFO, logger="bot.replies")
    sinks = await ask_held(app, [(q, {"channel": f"batch{i}"}) for i, q in enumerate(QUESTIONS)])
    together = [s.final for s in sinks]

    assert together == alone
    assert len(set(alone)) > 1  # different prompts, different replies: the rows are not mixed up
    batch_lines = [r.message for r in caplog.records if "conversation=test:w1/batch" in r.message]
    assert len(batch_lines) == 4 and all("batch=4 " in line for line in batch_lines)
