"""LoRA training on the demo model, on CPU, through the real CLI: the held-out loss falls, the
adapter loads with plain peft and changes greedy output, and the persona file points at it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.cli import main as bot_main
from bot.engines.contract import LoadOptions
from bot.engines.transformers.loader import load_model
from bot.models.prompt_formats import RINNA, Turn
from persona.cli import main
from persona.registry import parse_persona
from persona.training import (
    DataStats,
    Example,
    TrainConfig,
    TrainingError,
    collate,
    encode_example,
    render_prompt,
    validate,
)

FOODS = [
    "ラーメン", "カレー", "すし", "うどん", "そば", "パン", "ケーキ", "りんご", "みかん", "おにぎり",
    "てんぷら", "やきとり", "ぎょうざ", "さしみ", "からあげ", "たこやき", "おでん", "すきやき",
    "みそしる", "とうふ", "なっとう", "たまご", "ピザ", "パスタ",
]  # fmt: skip
PROMPT = RINNA.render([Turn("user", "カレーは好き？")])


def write_pairs(path: Path) -> None:
    with path.open("w", encoding="utf-8") as out:
        for food in FOODS:
            record = {
                "context": [{"speaker": "F001", "text": f"{food}は好き？"}],
                "reply": {"speaker": "M002", "text": f"{food}、大好きだよ！"},
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def demo(model_cache: Path) -> Any:
    return load_model("demo", LoadOptions(device="cpu", dtype="fp32", cache_dir=model_cache))


def greedy(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=16, do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("persona-train")
    data = root / "pairs.jsonl"
    write_pairs(data)
    argv = [
        "train", "--base", "demo", "--data", str(data), "--name", "foodie",
        "--persona-dir", str(root / "personas"), "--model-cache-dir", str(model_cache),
        "--device", "cpu", "--dtype", "fp32", "--max-steps", "40", "--lr", "3e-3",
        "--save-every", "10", "--eval-fraction", "0.2", "--batch-size", "4",
    ]  # fmt: skip
    assert main(argv) == 0
    out = root / "personas" / "foodie"
    summary = json.loads((out / "training.json").read_text(encoding="utf-8"))
    return {"root": root, "out": out, "summary": summary, "argv": argv}


def test_held_out_loss_falls(trained: dict[str, Any]) -> None:
    history = trained["summary"]["eval_history"]
    steps = [step for step, _ in history]
    assert steps == [0, 10, 20, 30, 40]
    first, last = history[0][1], history[-1][1]
    assert last < first - 0.1, history
    assert trained["summary"]["eval_examples"] == 5
    assert trained["summary"]["train_examples"] == 19
    assert trained["summary"]["steps"] == 40


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_adapter_loads_with_plain_peft_and_changes_greedy_output(
    trained: dict[str, Any], model_cache: Path
) -> None:
    from peft import PeftModel

    adapter = trained["out"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert config["lora_dropout"] == pytest.approx(0.05)
    assert config["target_modules"] == ["query_key_value"]
    assert config["base_model_name_or_path"] == "demo"

    base = demo(model_cache)
    before = greedy(base.model, base.tokenizer, PROMPT)
    peft_model = PeftModel.from_pretrained(base.model, str(adapter)).eval()
    after = greedy(peft_model, base.tokenizer, PROMPT)
    assert after != before
    with peft_model.disable_adapter():
        assert greedy(peft_model, base.tokenizer, PROMPT) == before


def test_checkpoints_are_adapters(trained: dict[str, Any]) -> None:
    folders = sorted(p.name for p in (trained["out"] / "checkpoints").iterdir())
    assert folders == ["step-000010", "step-000020", "step-000030"]
    for name in folders:
        folder = trained["out"] / "checkpoints" / name
        assert (folder / "adapter_model.safetensors").is_file()
        info = json.loads((folder / "persona_training.json").read_text(encoding="utf-8"))
        assert info["step"] == int(name.removeprefix("step-"))
        assert info["template"] == "rinna"


def test_persona_file_points_at_the_adapter(trained: dict[str, Any]) -> None:
    file = trained["root"] / "personas" / "foodie.toml"
    data = tomllib.loads(file.read_text(encoding="utf-8"))
    persona = parse_persona(data, str(file))
    assert persona.name == "foodie"
    assert persona.prompt_format == "rinna"
    assert persona.base_models == ("demo",)
    assert persona.sampling  # validated by the registry's own checks
    assert (file.parent / data["adapter"]).resolve() == (trained["out"] / "adapter").resolve()


def test_second_run_refuses_to_overwrite(trained: dict[str, Any], capsys) -> None:
    assert main(trained["argv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--overwrite" in err
    assert len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
@pytest.mark.parametrize("kind", ["8bit", "4bit"])
def test_quantize_on_cpu_fails_in_one_line(tmp_path: Path, capsys, kind: str) -> None:
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    argv = ["train", "--base", "demo", "--data", str(data), "--name", "q", "--quantize", kind,
            "--persona-dir", str(tmp_path / "personas")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: --quantize {kind} needs a CUDA GPU (bitsandbytes); on this machine train with "
        "--quantize none"
    )
    assert not (tmp_path / "personas").exists()


def test_loss_only_on_reply_tokens_and_prompt_matches_serving(model_cache: Path) -> None:
    tokenizer = demo(model_cache).tokenizer
    example = Example([Turn("user", "カレーは好き？", "F001")], "カレー、大好きだよ！")
    encoded = encode_example(tokenizer, "rinna", example, 256, DataStats())
    assert encoded is not None
    prompt_ids = tokenizer.encode(PROMPT)
    assert encoded.ids[: encoded.boundary] == prompt_ids
    batch = collate([encoded], pad_id=0)
    labels = [t for t in batch["labels"][0].tolist() if t != -100]
    assert labels[-1] == tokenizer.eos_id
    assert tokenizer.decode(labels[:-1]).strip() == "カレー、大好きだよ!"  # NFKC, as served


def test_oldest_context_dropped_to_fit_cutoff(model_cache: Path) -> None:
    tokenizer = demo(model_cache).tokenizer
    context = [
        Turn("user" if i % 2 == 0 else "assistant", f"{i}番目の長い発言です。" * 3)
        for i in range(5)
    ]
    example = Example(context, "はい。")
    stats = DataStats()
    full = encode_example(tokenizer, "rinna", example, 1024, stats)
    short = encode_example(tokenizer, "rinna", example, 60, stats)
    assert full is not None and short is not None
    assert len(short.ids) <= 60 < len(full.ids)
    assert "4番目" in tokenizer.decode(short.ids) and "0番目" not in tokenizer.decode(short.ids)
    assert stats.context_turns_dropped > 0


@pytest.mark.parametrize(
    ("template", "context", "expected"),
    [
        ("rinna", [Turn("user", "こんにちは")], "ユーザー: こんにちは<NL>システム: "),
        ("line", [Turn("user", "こんにちは")], "ユーザー: こんにちは\nシステム: "),
        ("instruct", [Turn("user", "こんにちは")], "### 指示:<NL>こんにちは<NL><NL>### 回答:<NL>"),
        (
            "instruct",
            [Turn("user", "やあ"), Turn("assistant", "どうも"), Turn("user", "元気？")],
            "### 指示:<NL>ユーザー: やあ<NL>システム: どうも<NL>ユーザー: 元気?<NL><NL>### 回答:<NL>",
        ),
        (
            "rinna",
            [Turn("user", "一", "F001"), Turn("user", "二", "M002")],
            "ユーザー: F001: 一<NL>M002: 二<NL>システム: ",
        ),
    ],
)
def test_templates(template: str, context: list[Turn], expected: str) -> None:
    assert render_prompt(template, context) == expected


def test_defaults_follow_the_public_rinna_recipe() -> None:
    config = TrainConfig(base="demo", data=Path("x"), name="x")
    assert (config.rank, config.alpha, config.dropout) == (8, 16, 0.05)
    assert (config.cutoff, config.lr, config.epochs) == (256, 3e-4, 3.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name!"}, "name must be"),
        ({"template": "alpaca"}, "--template"),
        ({"eval_fraction": 1.0}, "--eval-fraction"),
        ({"data": Path("/nonexistent/pairs.jsonl")}, "no such data file"),
    ],
)
def test_mistakes_fail_before_loading(tmp_path: Path, change: dict, message: str) -> None:
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    values: dict[str, Any] = {"base": "demo", "data": data, "name": "ok", "persona_dir": tmp_path}
    values.update(change)
    with pytest.raises(TrainingError, match=message):
        validate(TrainConfig(**values))


def test_the_auto_template_is_the_format_the_bot_serves(
    tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROMPT_FORMAT=line serves the demo model in LINE's format, so an adapter trained for it
    must be trained and recorded in that format too."""
    monkeypatch.chdir(tmp_path)  # no .env but the environment below
    monkeypatch.setenv("PROMPT_FORMAT", "line")
    data = tmp_path / "pairs.jsonl"
    write_pairs(data)
    argv = [
        "train", "--base", "demo", "--data", str(data), "--name", "liner",
        "--persona-dir", str(tmp_path / "personas"), "--model-cache-dir", str(model_cache),
        "--device", "cpu", "--dtype", "fp32", "--max-steps", "1", "--eval-fraction", "0",
    ]  # fmt: skip
    assert bot_main(["persona", *argv]) == 0  # as users run it: the settings come from the bot
    file = tmp_path / "personas" / "liner.toml"
    persona = parse_persona(tomllib.loads(file.read_text(encoding="utf-8")), str(file))
    options = LoadOptions(device="cpu", dtype="fp32", cache_dir=model_cache, prompt_format="line")
    served = load_model("demo", options)
    assert persona.prompt_format == served.prompt_format.name == "line"


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_overwrite_that_fails_mid_save_keeps_the_old_adapter(
    trained: dict[str, Any], model_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retrain with --overwrite that dies while writing the new adapter (disk full, killed)
    leaves the previous adapter as it was, still loadable, and no half-written folder."""
    import shutil

    from peft import PeftModel

    import persona.training.checkpoints as checkpoints

    personas = tmp_path / "personas"
    shutil.copytree(trained["root"] / "personas", personas)
    adapter = personas / "foodie" / "adapter"
    before = {p.name: p.read_bytes() for p in adapter.iterdir()}
    real_save = checkpoints._save_adapter

    def save_then_die(model: Any, folder: Path, info: dict[str, Any]) -> None:
        if "checkpoints" in folder.parts:
            real_save(model, folder, info)
            return
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # a torn write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_save_adapter", save_then_die)
    argv = [*trained["argv"], "--overwrite", "--max-steps", "2", "--save-every", "0"]
    argv[argv.index("--persona-dir") + 1] = str(personas)
    with pytest.raises(OSError, match="No space"):
        main(argv)

    assert {p.name: p.read_bytes() for p in adapter.iterdir()} == before
    assert sorted(p.name for p in adapter.parent.iterdir() if p.name.startswith(".")) == []
    base = demo(model_cache)
    PeftModel.from_pretrained(base.model, str(adapter))  # still loads


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_overwrite_replaces_the_adapter_and_leaves_no_staging_folder(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    import shutil

    personas = tmp_path / "personas"
    shutil.copytree(trained["root"] / "personas", personas)
    argv = [*trained["argv"], "--overwrite", "--max-steps", "2", "--save-every", "0"]
    argv[argv.index("--persona-dir") + 1] = str(personas)
    assert main(argv) == 0
    adapter = personas / "foodie" / "adapter"
    info = json.loads((adapter / "persona_training.json").read_text(encoding="utf-8"))
    assert info["step"] == 2
    assert (adapter / "adapter_model.safetensors").is_file()
    hidden = [p.name for p in [*adapter.parent.iterdir(), *personas.iterdir()]]
    assert not [name for name in hidden if name.startswith(".")]


@pytest.mark.parametrize("exchange", [True, False])
def test_swap_in_puts_the_new_folder_in_place_and_the_old_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    import persona.training.checkpoints as checkpoints

    if not exchange:  # the two-rename path other systems take
        monkeypatch.setattr(checkpoints, "_exchange", lambda a, b: False)
    target, new = tmp_path / "adapter", tmp_path / ".adapter.new-x"
    target.mkdir()
    (target / "weights").write_text("old")
    new.mkdir()
    (new / "weights").write_text("new")
    checkpoints._swap_in(new, target)
    assert (target / "weights").read_text() == "new"
    assert (new / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".adapter.new-x", "adapter"]
