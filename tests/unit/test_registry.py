"""The model catalogue: one named entry per seed model, each consistent."""

from __future__ import annotations

import re

import pytest

from bot.cli import main
from bot.models.catalogue import CATALOGUE, find_entry, format_catalogue, model_names
from bot.models.prompt_formats import detect_format

# Every model of the seed catalogue (the source articles' models).
SEED_MODELS = {
    "rinna/japanese-gpt-neox-3.6b",
    "rinna/japanese-gpt-neox-3.6b-instruction-sft",
    "rinna/japanese-gpt-neox-3.6b-instruction-sft-v2",
    "rinna/japanese-gpt-neox-3.6b-instruction-ppo",
    "rinna/japanese-gpt2-xsmall",
    "cyberagent/open-calm-1b",
    "cyberagent/open-calm-3b",
    "cyberagent/open-calm-7b",
    "line-corporation/japanese-large-lm-1.7b-instruction-sft",
    "line-corporation/japanese-large-lm-3.6b-instruction-sft",
    "abeja/gpt-neox-japanese-2.7b",
    "abeja/gpt2-large-japanese",
    "yellowback/gpt-neo-japanese-1.3B",
    "Tanrei/GPTSAN-japanese",  # the project's own code: transformers 5 removed it
}
FAMILIES = {
    "GPTNeoXForCausalLM",
    "GPT2LMHeadModel",
    "GPTNeoXJapaneseForCausalLM",
    "GPTNeoForCausalLM",
    "GPTSanJapaneseForConditionalGeneration",
}


def test_every_seed_model_has_one_entry():
    assert {e.hub_id for e in CATALOGUE} == SEED_MODELS
    assert len(CATALOGUE) == len(SEED_MODELS)


def test_names_and_hub_ids_are_unique_and_never_collide():
    names = [e.name for e in CATALOGUE]
    hub_ids = [e.hub_id for e in CATALOGUE]
    assert len(set(names)) == len(names)
    assert len(set(hub_ids)) == len(hub_ids)
    assert not set(names) & set(hub_ids)
    assert "demo" not in names and model_names() == ["demo", *names]
    for name in names:  # a short name is typed in chat: no spaces, no slash, lower case
        assert name == name.lower() and "/" not in name and " " not in name


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_an_entry_is_found_by_name_or_hub_id(entry):
    assert find_entry(entry.name) is entry
    assert find_entry(entry.hub_id) is entry
    assert find_entry(f"  {entry.name}\n") is entry


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_each_entry_is_complete_and_consistent(entry):
    assert entry.prompt_format in {"rinna", "line", "plain", "gptsan"}
    assert entry.tokenizer in {"sentencepiece", "bpe", "gpt-neox-japanese", "gptsan"}
    assert entry.family in FAMILIES
    assert (entry.family == "GPTNeoXJapaneseForCausalLM") == (
        entry.tokenizer == "gpt-neox-japanese"
    )
    assert (entry.tokenizer == "gptsan") == (entry.prompt_format == "gptsan")
    assert entry.context_length in ({1280} if entry.tokenizer == "gptsan" else {1024, 2048})
    assert 0.01 < entry.parameters_b < 10
    assert all(isinstance(v, int) and v >= 0 for v in entry.special_ids.values())
    assert set(entry.special_ids) <= {"bos", "eos", "pad", "unk"}
    # A folder named after the hub id gets the same format by detection as by the entry.
    assert detect_format(entry.hub_id, has_nl_piece=False).name == entry.prompt_format


def test_instruction_models_use_their_cards_formats():
    formats = {e.hub_id: e.prompt_format for e in CATALOGUE}
    for hub_id, fmt in formats.items():
        if hub_id == "Tanrei/GPTSAN-japanese":
            assert fmt == "gptsan"
        elif "instruction" in hub_id:
            assert fmt == ("rinna" if hub_id.startswith("rinna/") else "line"), hub_id
        else:
            assert fmt == "plain", hub_id


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e.name)
def test_memory_estimates_scale_with_precision(entry):
    fp32, fp16, bf16, int8, int4 = (
        entry.memory_gib(p) for p in ("fp32", "fp16", "bf16", "8bit", "4bit")
    )
    assert fp32 == pytest.approx(2 * fp16) and bf16 == fp16
    assert fp16 == pytest.approx(2 * int8) and int8 == pytest.approx(2 * int4)
    weights_fp16 = entry.parameters_b * 1e9 * 2 / 2**30
    assert weights_fp16 < fp16 < 1.5 * weights_fp16  # weights plus some room, not a multiple
    with pytest.raises(KeyError):
        entry.memory_gib("fp8")


def test_memory_grows_with_the_model():
    by_size = sorted(CATALOGUE, key=lambda e: e.parameters_b)
    estimates = [e.memory_gib("fp16") for e in by_size]
    assert estimates == sorted(estimates)
    rinna = find_entry("rinna-3.6b-ppo")
    assert rinna is not None and 7.2 < rinna.memory_gib("fp16") * 2**30 / 1e9 < 10


def test_the_models_listing_names_every_entry_with_four_estimates():
    listing = format_catalogue()
    lines = listing.splitlines()
    for entry in CATALOGUE:
        [line] = [line for line in lines if line.startswith(f"{entry.name} ")]
        assert entry.hub_id in line and entry.prompt_format in line
        estimates = line.split(entry.prompt_format, 1)[1]
        found = len(re.findall(r" (?:\d+\.\dG|\d+M)\b", estimates))
        assert found == (4 if entry.quantizable else 2), line  # fp32 … 4-bit
        if not entry.quantizable:
            assert estimates.split()[-2:] == ["-", "-"]
    assert "demo" in listing and "PROMPT_FORMAT" in listing


def test_python_m_bot_models_prints_the_listing(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out == format_catalogue() + "\n"


def test_gptsan_is_offered_in_fp16_bf16_fp32_only():
    """transformers 5 removed GPTSanJapanese; the project serves it with its own code, without
    bitsandbytes quantization or LoRA."""
    entry = find_entry("gptsan")
    assert entry is not None and find_entry("Tanrei/GPTSAN-japanese") is entry
    assert (entry.context_length, entry.prompt_format, entry.tokenizer) == (
        1280,
        "gptsan",
        "gptsan",
    )
    assert not entry.quantizable and all(e.quantizable for e in CATALOGUE if e is not entry)
    assert 6.0 < entry.memory_gib("fp16") < 7.0
    [line] = [line for line in format_catalogue().splitlines() if line.startswith("gptsan ")]
    assert line.split()[-2:] == ["-", "-"]


def test_the_listing_offers_every_prompt_format_the_settings_accept():
    from bot.app.settings import Settings
    from bot.models.prompt_formats import FORMATS

    [footer] = [line for line in format_catalogue().splitlines() if "PROMPT_FORMAT=" in line]
    offered = footer.split("PROMPT_FORMAT=", 1)[1].split(")", 1)[0].split("|")
    assert set(offered) == {"auto", *FORMATS}
    for name in offered:
        assert Settings(_env_file=None, prompt_format=name).prompt_format == name
