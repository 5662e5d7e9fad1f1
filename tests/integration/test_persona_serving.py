"""LoRA personas served from adapters made with plain peft code: per-channel personas on one
base model, mixed-persona batches identical to single runs, mismatched adapters refused."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from bot.models.demo import ensure_demo_model
from tests.integration.test_batching import QUESTIONS, ask_held
from tests.integration.test_pipeline import ask


def save_adapter(model, folder, base_name: str, seed: int) -> None:
    """An adapter as any peft user would make it (random LoRA weights so it changes output)."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=32,
        target_modules=["query_key_value"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)


def write_persona(
    persona_dir, name: str, adapter, template: str = "rinna", base: str = "demo"
) -> None:
    persona_dir.mkdir(parents=True, exist_ok=True)
    (persona_dir / f"{name}.toml").write_text(
        f'name = "{name}"\ndisplay_name = "{name}"\nprompt_format = "{template}"\n'
        f'base_models = ["{base}"]\nadapter = "{adapter}"\n',
        encoding="utf-8",
    )


@pytest.fixture(scope="module")
def adapters(model_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    demo = ensure_demo_model(model_cache)
    for name, seed in (("alpha", 1), ("beta", 2)):
        save_adapter(AutoModelForCausalLM.from_pretrained(str(demo)), folder / name, "demo", seed)
    # Made for another base: by name, and by shape (a smaller hidden size).
    save_adapter(
        AutoModelForCausalLM.from_pretrained(str(demo)),
        folder / "other-name",
        "rinna/japanese-gpt-neox-3.6b-instruction-ppo",
        3,
    )
    small = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
    )
    save_adapter(small, folder / "other-shape", "demo", 4)
    return folder


@pytest.fixture
def persona_dir(tmp_path, adapters):
    personas = tmp_path / "personas"
    write_persona(personas, "alpha", adapters / "alpha")
    write_persona(personas, "beta", adapters / "beta", template="instruct")
    write_persona(
        personas,
        "wrongbase",
        adapters / "other-name",
        base="rinna/japanese-gpt-neox-3.6b-instruction-ppo",
    )
    write_persona(personas, "wrongshape", adapters / "other-shape")
    return personas


async def persona_app(make_app, persona_dir, **overrides):
    return await make_app(temperature=0, max_new_tokens=20, persona_dir=persona_dir, **overrides)


async def test_adapters_change_replies_per_channel_without_reloading_the_base(
    make_app, persona_dir
):
    app = await persona_app(make_app, persona_dir)
    base_model = app.worker.current
    plain = (await ask(app, QUESTIONS[0], channel="plain")).final
    for channel in ("a", "b"):
        name = "alpha" if channel == "a" else "beta"
        answer = await ask(app, f"/persona {name}", channel=channel, admin=True)
        assert name in answer.final
    alpha = (await ask(app, QUESTIONS[0], channel="a")).final
    beta = (await ask(app, QUESTIONS[0], channel="b")).final
    again = (await ask(app, QUESTIONS[0], channel="plain2")).final
    assert len({plain, alpha, beta}) == 3  # each adapter changes the greedy reply
    assert again == plain  # the base model is untouched for channels without a persona
    assert app.worker.current is base_model
    assert app.worker.engine.adapters.loaded == ["alpha", "beta"]


async def test_mixed_persona_batches_match_single_runs(make_app, persona_dir):
    app = await persona_app(make_app, persona_dir)
    personas = ["alpha", "beta", None, "alpha"]
    for i, persona in enumerate(personas):
        if persona:
            await ask(app, f"/persona {persona}", channel=f"alone{i}", admin=True)
            await ask(app, f"/persona {persona}", channel=f"batch{i}", admin=True)
    alone = [(await ask(app, QUESTIONS[i], channel=f"alone{i}")).final for i in range(4)]
    sinks = await ask_held(app, [(QUESTIONS[i], {"channel": f"batch{i}"}) for i in range(4)])
    together = [s.final for s in sinks]
    assert together == alone


async def test_a_small_adapter_cache_still_serves_every_persona(make_app, persona_dir):
    app = await persona_app(make_app, persona_dir, max_cached_adapters=1)
    reference = await persona_app(make_app, persona_dir)  # same database: own channels
    targets = {"small": app, "ref": reference}
    for prefix, target in targets.items():
        await ask(target, "/persona alpha", channel=f"{prefix}a", admin=True)
        await ask(target, "/persona beta", channel=f"{prefix}b", admin=True)
    replies = []
    for prefix, target in targets.items():
        replies.append(
            [
                (await ask(target, "こんにちは", channel=f"{prefix}{c}", thread=str(i))).final
                for i, c in enumerate(["a", "b", "a"])
            ]
        )
    assert replies[0] == replies[1]
    assert len(app.worker.engine.adapters.loaded) == 1


@pytest.mark.parametrize(
    ("persona", "fragment"),
    [
        ("wrongbase", "rinna/japanese-gpt-neox-3.6b-instruction-ppo 用"),
        ("wrongshape", "形が合いません"),
    ],
)
async def test_a_mismatched_adapter_is_refused_and_never_half_loaded(
    make_app, persona_dir, persona, fragment
):
    app = await persona_app(make_app, persona_dir)
    before = (await ask(app, "こんにちは", channel="x")).final
    refused = await ask(app, f"/persona {persona}", channel="c", admin=True)
    assert fragment in refused.final
    assert app.worker.engine.adapters.loaded == []
    assert type(app.worker.current.model).__name__ == "GPTNeoXForCausalLM"  # not wrapped
    assert (await ask(app, "こんにちは", channel="y")).final == before
    status = await ask(app, "/status", channel="c")
    assert "ペルソナ なし" in status.final


async def test_an_adapter_that_stopped_fitting_is_answered_clearly(make_app, persona_dir, tmp_path):
    app = await persona_app(make_app, persona_dir)
    await ask(app, "/persona alpha", channel="c", admin=True)
    # The operator deletes the adapter folder while the bot runs.
    import shutil

    adapter = app.personas.get("alpha").adapter
    moved = tmp_path / "moved"
    shutil.move(str(adapter), moved)
    try:
        reply = await ask(app, "こんにちは", channel="c")
    finally:
        shutil.move(str(moved), adapter)
    assert "見つかりません" in reply.final


async def test_personas_keep_working_after_a_model_swap(make_app, persona_dir):
    app = await persona_app(make_app, persona_dir)
    await ask(app, "/persona alpha", channel="c", admin=True)
    before = (await ask(app, QUESTIONS[0], channel="c", thread="1")).final
    await ask(app, "/model demo", admin=True)  # a new model object, no adapters in it
    after_swap = (await ask(app, QUESTIONS[0], channel="c", thread="2")).final
    assert after_swap == before
    assert app.worker.engine.adapters.loaded == ["alpha"]
    from peft import PeftModel

    assert isinstance(app.worker.current.model, PeftModel)


async def test_an_adapter_needed_by_a_waiting_request_is_reloaded_after_eviction(
    make_app, persona_dir
):
    # One adapter fits in the cache, two rows per batch, and rows that differ in
    # no_repeat_ngram_size cannot share one: the queue A(base) B(alpha) C(base) D(beta) runs
    # as [A, C] then [B] then [D]... B was prepared while [A, C] formed, and must still find
    # its adapter loaded when its own batch starts.
    app = await persona_app(make_app, persona_dir, max_cached_adapters=1, max_batch_size=2)
    for channel, persona in (("b", "alpha"), ("d", "beta")):
        await ask(app, f"/persona {persona}", channel=channel, admin=True)
        await ask(app, "/set no_repeat_ngram_size 3", channel=channel, admin=True)
    replies = [
        s.final for s in await ask_held(app, [(QUESTIONS[0], {"channel": c}) for c in "abcd"])
    ]
    assert list(app.worker.batch_sizes)[-2:] == [2, 2]
    assert all("エラー" not in reply for reply in replies), replies
    base, alpha, base_again, beta = replies
    assert base == base_again
    assert len({base, alpha, beta}) == 3  # each persona row really ran with its adapter
