"""GPTSAN's model against transformers 4.40.2 (tests/data/gptsan, from make_reference.py).

Tolerance: logits within 1e-4 absolute in fp32 (they run to about ±40; the two implementations
do the same float32 operations, so they agree far closer than that). Greedy continuations
through `generate` with its KV cache: ids exact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from bot.engines.contract import LoadOptions
from bot.engines.transformers.loader import load_model
from bot.errors import ModelLoadError
from bot.models.gptsan.loading import load_gptsan
from bot.models.gptsan.modeling import prefix_types

DATA = Path(__file__).resolve().parents[1] / "data" / "gptsan"
REFERENCE = json.loads((DATA / "reference.json").read_text(encoding="utf-8"))
LOGITS = load_file(str(DATA / "reference.safetensors"))
CASES = REFERENCE["cases"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return {name: load_gptsan(DATA / name, torch.float32, "cpu") for name in ("ext", "spout")}


def _inputs(case: dict) -> tuple[torch.Tensor, dict]:
    ids = torch.tensor([case["input_ids"]])
    kwargs: dict = {"attention_mask": torch.ones_like(ids)}
    if case["token_type_ids"] is not None:
        kwargs["token_type_ids"] = torch.tensor([case["token_type_ids"]])
    if case["spout"] is not None:
        kwargs["spout"] = torch.tensor([case["spout"]])
    return ids, kwargs


def test_the_fixtures_cover_extension_layers_spout_and_prefixes(models):
    assert models["ext"].config.num_ext_layers == 1 and models["ext"].config.d_spout == 0
    assert models["spout"].config.d_spout > 0 and models["spout"].config.num_ext_layers == 0
    names = {(c["checkpoint"], c["case"]) for c in CASES}
    assert {("ext", "prefix"), ("ext", "no_prefix"), ("spout", "spout")} <= names
    assert (DATA / "ext" / "model.safetensors").exists()
    assert (DATA / "spout" / "pytorch_model.bin").exists()


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['checkpoint']}-{c['case']}")
def test_logits_match_transformers_4(models, case):
    ids, kwargs = _inputs(case)
    with torch.inference_mode():
        logits = models[case["checkpoint"]](ids, **kwargs).logits[0]
    reference = LOGITS[f"{case['checkpoint']}/{case['case']}"]
    assert logits.shape == reference.shape
    assert (logits - reference).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['checkpoint']}-{c['case']}")
def test_greedy_generation_with_the_cache_matches_transformers_4(models, case):
    ids, kwargs = _inputs(case)
    with torch.inference_mode():
        out = models[case["checkpoint"]].generate(
            ids, max_new_tokens=8, do_sample=False, use_cache=True, **kwargs
        )
    assert out[0, ids.shape[1] :].tolist() == case["generated"]


def test_the_prefix_and_expert_capacity_change_the_logits(models):
    """The fixtures would catch a model that ignored token types or capacity."""
    case = next(c for c in CASES if c["checkpoint"] == "ext" and c["case"] == "prefix")
    ids, kwargs = _inputs(case)
    model = models["ext"]
    reference = LOGITS["ext/prefix"]
    with torch.inference_mode():
        causal = model(ids, attention_mask=kwargs["attention_mask"]).logits[0]
        for module in model.modules():
            if hasattr(module, "capacity"):
                module.capacity = 1000
        roomy = model(ids, **kwargs).logits[0]
        for module in model.modules():
            if hasattr(module, "capacity"):
                module.capacity = model.config.expert_capacity
    assert (causal - reference).abs().max() > 1.0
    assert (roomy - reference).abs().max() > 1.0


def test_a_left_padded_batch_gives_each_row_its_own_logits_and_continuation(models):
    """Rows of different lengths, left-padded, with the prefix taken from the segmenter (as the
    bot's batches do): each row gets what it gets alone."""
    rows = [c for c in CASES if c["checkpoint"] == "ext" and c["token_type_ids"] is not None]
    model = models["ext"]
    width = max(len(c["input_ids"]) for c in rows)
    pad = model.config.pad_token_id
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, case in enumerate(rows):
        ids[i, width - len(case["input_ids"]) :] = torch.tensor(case["input_ids"])
        mask[i, width - len(case["input_ids"]) :] = 1
    assert mask.sum() < mask.numel()  # some row really is padded
    with torch.inference_mode():
        logits = model(
            ids,
            attention_mask=mask,
            token_type_ids=prefix_types(ids, model.config.separator_token_id),
        ).logits
        out = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    for i, case in enumerate(rows):
        length = len(case["input_ids"])
        reference = LOGITS[f"ext/{case['case']}"]
        assert (logits[i, width - length :] - reference).abs().max().item() < TOLERANCE
        assert out[i, width:].tolist() == case["generated"]


@pytest.mark.parametrize(
    ("ids", "types"),
    [
        ([[5, 6, 9, 7]], [[1, 1, 0, 0]]),
        ([[0, 5, 9, 7], [5, 9, 9, 7]], [[1, 1, 0, 0], [1, 0, 0, 0]]),
        ([[5, 6, 7]], [[0, 0, 0]]),
    ],
)
def test_prefix_types_come_from_the_first_separator(ids, types):
    assert prefix_types(torch.tensor(ids), 9).tolist() == types


def test_bf16_stays_close_to_fp32():
    model = load_gptsan(DATA / "ext", torch.bfloat16, "cpu")
    case = next(c for c in CASES if c["checkpoint"] == "ext" and c["case"] == "prefix")
    ids, kwargs = _inputs(case)
    with torch.inference_mode():
        logits = model(ids, **kwargs).logits[0].float()
    reference = LOGITS["ext/prefix"]
    assert model.dtype == torch.bfloat16
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()


# --- checkpoints that do not fit are refused, naming the tensor ------------------------------


def _broken_copy(tmp_path: Path, change) -> Path:
    folder = tmp_path / "gptsan"
    shutil.copytree(DATA / "ext", folder)
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))
    return folder


def _load(folder: Path, **options) -> None:
    load_model(str(folder), LoadOptions(device="cpu", dtype="fp32", **options))


def test_a_missing_tensor_is_refused_by_name(tmp_path):
    name = "model.blocks.1.feed_forward.mlp.experts.expert_2.wo.weight"
    folder = _broken_copy(tmp_path, lambda s: s.pop(name))
    with pytest.raises(ModelLoadError) as error:
        _load(folder)
    assert name in error.value.user_message and "ありません" in error.value.user_message


def test_a_misshapen_tensor_is_refused_with_both_shapes(tmp_path):
    name = "model.blocks.0.feed_forward.mlp.router.classifier.weight"
    folder = _broken_copy(tmp_path, lambda s: s.update({name: torch.zeros((3, 32))}))
    with pytest.raises(ModelLoadError) as error:
        _load(folder)
    message = error.value.user_message
    assert name in message and "(3, 32)" in message and "(4, 32)" in message


def test_a_tensor_the_config_does_not_use_is_refused(tmp_path):
    name = "model.blocks.3.self_attn.norm.weight"
    folder = _broken_copy(tmp_path, lambda s: s.update({name: torch.ones(32)}))
    with pytest.raises(ModelLoadError) as error:
        _load(folder)
    assert name in error.value.user_message


def test_quantization_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(ModelLoadError) as error:
        _load(DATA / "ext", quantization="8bit")
    assert "8-bit/4-bit" in error.value.user_message
    assert "QUANTIZATION=none" in error.value.user_message


def test_the_loader_serves_a_gptsan_folder_with_its_own_parts():
    loaded = load_model(str(DATA / "spout"), LoadOptions(device="cpu", dtype="fp32"))
    assert type(loaded.model).__name__ == "GPTSanForGeneration"
    assert type(loaded.tokenizer).__name__ == "GPTSanTokenizer"
    assert loaded.prompt_format.name == "gptsan"
    assert loaded.context_length == 48  # max_position_embeddings, for a folder not in the catalogue
    assert not loaded.supports_lora
    assert loaded.tokenizer.eos_id == loaded.model.config.eos_token_id


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ('{"model_type": "gptsan-japanese"}', True),
        ('{"architectures": ["GPTSanJapaneseForConditionalGeneration"]}', True),
        ('{"model_type": "gpt_neox"}', False),
        ("{not json", False),  # left for the general loader to report
    ],
)
def test_gptsan_folders_are_recognised_by_their_config(tmp_path, config_text, expected):
    from bot.models.gptsan.loading import is_gptsan_folder

    (tmp_path / "config.json").write_text(config_text, encoding="utf-8")
    assert is_gptsan_folder(tmp_path) is expected
    assert is_gptsan_folder(tmp_path / "missing") is False


def _spout_copy(tmp_path: Path, change) -> Path:
    folder = tmp_path / "gptsan-spout"
    shutil.copytree(DATA / "spout", folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    torch.save(change(state), folder / "pytorch_model.bin")
    return folder


def test_spout_weights_under_the_4x_converters_misspelt_name_load_as_the_spout(tmp_path):
    folder = _spout_copy(
        tmp_path, lambda s: {k.replace("model.spout.", "model.sqout."): v for k, v in s.items()}
    )
    model = load_gptsan(folder, torch.float32, "cpu")
    case = next(c for c in CASES if c["case"] == "spout")
    ids, kwargs = _inputs(case)
    with torch.inference_mode():
        logits = model(ids, **kwargs).logits[0]
    assert (logits - LOGITS["spout/spout"]).abs().max().item() < TOLERANCE


def test_a_checkpoint_without_spout_weights_loads_without_the_spout_input(tmp_path):
    folder = _spout_copy(tmp_path, lambda s: {k: v for k, v in s.items() if "spout" not in k})
    model = load_gptsan(folder, torch.float32, "cpu")
    assert model.config.d_spout == 0
    case = next(c for c in CASES if c["checkpoint"] == "spout" and c["case"] == "prefix")
    ids, kwargs = _inputs(case)
    with torch.inference_mode():
        logits = model(ids, **kwargs).logits[0]
        assert (logits - LOGITS["spout/prefix"]).abs().max().item() < TOLERANCE
        with pytest.raises(ValueError, match="spout"):
            model(ids, spout=torch.zeros((1, 16)))


def test_a_checkpoint_with_only_part_of_the_spout_is_refused(tmp_path):
    folder = _spout_copy(
        tmp_path, lambda s: {k: v for k, v in s.items() if k != "model.spout.4.weight"}
    )
    with pytest.raises(ModelLoadError, match=r"model\.spout\.4\.weight"):
        load_gptsan(folder, torch.float32, "cpu")
