"""Train a persona's LoRA adapter on dialogue pairs, and write a persona file that uses it.

The recipe follows the public rinna 3.6B LoRA recipes (see docs/PERSONAS.md): r=8, alpha 16,
dropout 0.05 on `query_key_value`, cutoff 256 tokens, 3 epochs, lr 3e-4, base in 8-bit or 4-bit
through bitsandbytes on a GPU when asked. The loop is plain torch: the loss counts only the reply
tokens, held-out loss is measured before, during and after training, and the adapter is saved
every `save_every` steps and at the end.

Prompts are rendered with the bot's own prompt formats (`bot.models.prompt_formats`), including its
`neutralise`, so the adapter sees in training exactly the text it will see when serving.

Data: JSON lines, either the shape `persona.nucc` writes
    {"context": [{"speaker": "F107", "text": "…"}, …], "reply": {"speaker": "F023", "text": "…"}}
(context turns by the reply's speaker become the bot's turns, all others user turns, named by
speaker when there are several) or a single exchange {"input": "…", "output": "…"}.

Output (`--output-dir`, default `data/personas/NAME`):
    adapter/                 the final peft adapter (loads with `PeftModel.from_pretrained`)
    checkpoints/step-NNNNNN/ intermediate adapters (the newest `keep_checkpoints` are kept)
    training.json            settings, data statistics and the loss history
and the persona file `PERSONA_DIR/NAME.toml` (default `data/personas/NAME.toml`) whose
`adapter` key is a path relative to the persona file's folder, or absolute when the adapter
lies outside it.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.engines.contract import LoadOptions
from bot.models.prompt_formats import PERSONA_FORMATS, PromptFormat, Turn, neutralise
from bot.models.tokenizers import Tokenizer

TEMPLATES = ("rinna", "line", "instruct")
QUANTIZE = ("none", "8bit", "4bit")
INSTRUCT_PROMPT = "### 指示:<NL>{input}<NL><NL>### 回答:<NL>"
IGNORE = -100

# LoRA targets per model type: the attention projections the public recipes adapt.
TARGET_MODULES: dict[str, list[str]] = {
    "gpt_neox": ["query_key_value"],
    "gpt_neox_japanese": ["query_key_value"],
    "gpt2": ["c_attn"],
    "gpt_neo": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
}
# What the persona file asks of the sampler; short casual replies suit conversation data.
PERSONA_SAMPLING = {"temperature": 0.7, "repetition_penalty": 1.1}

Progress = Callable[[str], None]


class TrainingError(Exception):
    """Something the user can fix (bad data, wrong option, no GPU for --quantize); the message
    is one line saying what to change."""


@dataclass
class TrainConfig:
    base: str
    data: Path
    name: str
    template: str = "auto"  # rinna / line / instruct; auto: the format the bot serves the base in
    epochs: float = 3.0
    lr: float = 3e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    cutoff: int = 256
    batch_size: int = 4
    grad_accum: int = 1
    eval_fraction: float = 0.1
    max_eval_examples: int = 256
    max_steps: int | None = None  # overrides epochs
    warmup_ratio: float = 0.03
    save_every: int = 200  # 0: only at the end
    eval_every: int | None = None  # None: as often as save_every
    keep_checkpoints: int = 3
    log_every: int | None = None  # None: about 20 progress lines a run
    seed: int = 0
    quantize: str = "none"
    target_modules: list[str] | None = None
    output_dir: Path | None = None
    persona_dir: Path = Path("data/personas")
    display_name: str = ""
    description: str = ""
    preamble: str = ""
    overwrite: bool = False
    load: LoadOptions = field(default_factory=LoadOptions)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.persona_dir) / self.name


@dataclass
class Example:
    context: list[Turn]
    reply: str


@dataclass
class EncodedExample:
    ids: list[int]
    boundary: int  # tokens before this index are prompt: no loss on them


@dataclass
class DataStats:
    records: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    context_turns_dropped: int = 0  # oldest turns left out to fit the cutoff
    replies_truncated: int = 0


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    persona_file: Path
    template: str
    steps: int
    train_examples: int
    eval_examples: int
    eval_history: list[tuple[int, float]]  # (step, held-out loss)
    train_history: list[tuple[int, float]]  # (step, mean training loss since the last line)
    checkpoints: list[Path]
    data: DataStats
    seconds: float

    @property
    def initial_eval_loss(self) -> float | None:
        return self.eval_history[0][1] if self.eval_history else None

    @property
    def final_eval_loss(self) -> float | None:
        return self.eval_history[-1][1] if self.eval_history else None


# --- data -------------------------------------------------------------------------------------


def load_pairs(path: Path, stats: DataStats) -> list[Example]:
    """Read JSON lines of either accepted shape; malformed lines are counted, not fatal."""
    examples: list[Example] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"cannot read {path}: {exc}") from exc
    for line in lines:
        if not line.strip():
            continue
        stats.records += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            stats.skipped["not JSON"] += 1
            continue
        example = _example(record) if isinstance(record, dict) else None
        if example is None:
            stats.skipped["no context/reply or input/output"] += 1
        elif not example.reply.strip() or not example.context:
            stats.skipped["empty reply or context"] += 1
        else:
            examples.append(example)
    return examples


def _example(record: dict[str, Any]) -> Example | None:
    if "reply" in record and "context" in record:
        reply = record["reply"]
        if isinstance(reply, str):
            reply = {"speaker": "", "text": reply}
        if not isinstance(reply, dict) or not isinstance(record["context"], list):
            return None
        speaker = str(reply.get("speaker", ""))
        turns = []
        for item in record["context"]:
            if isinstance(item, str):
                item = {"speaker": "", "text": item}
            if not isinstance(item, dict) or not str(item.get("text", "")).strip():
                continue
            who = str(item.get("speaker", ""))
            role = "assistant" if speaker and who == speaker else "user"
            turns.append(Turn(role, str(item["text"]), author_name=who))
        return Example(turns, str(reply.get("text", "")))
    if "input" in record and "output" in record:
        text = str(record["input"])
        return Example([Turn("user", text)] if text.strip() else [], str(record["output"]))
    return None


def render_prompt(
    template: str,
    context: Sequence[Turn],
    preamble: str = "",
    special_tokens: Collection[str] = (),
) -> str:
    """The prompt text for `context`, ending where the reply begins. rinna and line are the
    bot's own formats; instruct puts the exchange in `{input}` of the public recipe's template:
    the user's text alone for a single user turn, else the labelled transcript.
    `special_tokens`: the tokenizer's declared tokens, defused as when serving."""
    if template in TEMPLATES:  # the serving formats themselves, so training matches serving
        return PERSONA_FORMATS[template].render(context, preamble, special_tokens)
    raise TrainingError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")


def render_reply(template: str, text: str, special_tokens: Collection[str] = ()) -> str:
    newline = "\n" if template == "line" else "<NL>"
    return neutralise(text, special_tokens).strip().replace("\n", newline)


def encode_example(
    tokenizer: Tokenizer,
    template: str,
    example: Example,
    cutoff: int,
    stats: DataStats,
    preamble: str = "",
) -> EncodedExample | None:
    """Token ids of prompt + reply + end-of-text, within `cutoff`.

    Oldest context turns are dropped until it fits; a reply too long even then is cut short.
    The prompt and the whole text are encoded separately and the loss starts where their ids
    part, so the prompt tokens are the ones the bot will send when serving."""
    reply = render_reply(template, example.reply, tokenizer.special_tokens)
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    if not example.context:
        stats.skipped["empty reply or context"] += 1
        return None
    for keep in range(len(example.context), 0, -1):
        prompt = render_prompt(
            template, example.context[-keep:], preamble, tokenizer.special_tokens
        )
        prompt_ids = tokenizer.encode(prompt)
        ids = tokenizer.encode(prompt + reply) + eos
        boundary = _common_prefix(prompt_ids, ids)
        if len(ids) <= cutoff:
            stats.context_turns_dropped += len(example.context) - keep
            return EncodedExample(ids, boundary)
    stats.context_turns_dropped += len(example.context) - 1
    if boundary > cutoff // 2:
        stats.skipped["prompt too long for the cutoff"] += 1
        return None
    stats.replies_truncated += 1
    return EncodedExample(ids[:cutoff], boundary)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def split_examples(
    items: list[EncodedExample], fraction: float, seed: int, max_eval: int
) -> tuple[list[EncodedExample], list[EncodedExample]]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = 0
    if fraction > 0 and len(items) >= 2:
        n_eval = min(max(1, round(len(items) * fraction)), max_eval, len(items) - 1)
    held = [items[i] for i in order[:n_eval]]
    train = [items[i] for i in order[n_eval:]]
    return train, held


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding)."""
    import torch

    width = max(len(e.ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.ids)
        input_ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        labels[row, example.boundary : n] = torch.tensor(example.ids[example.boundary :])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# --- model ------------------------------------------------------------------------------------


def check_quantize(kind: str, device: str) -> None:
    """Fail early, in one line, when 8-bit/4-bit cannot work here."""
    if kind == "none":
        return
    if kind not in QUANTIZE:
        raise TrainingError(f"--quantize must be one of {', '.join(QUANTIZE)}")
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        raise TrainingError(
            f"--quantize {kind} needs a CUDA GPU (bitsandbytes); on this machine train with "
            "--quantize none"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise TrainingError(
            f"--quantize {kind} needs bitsandbytes: pip install 'nihongo-chat-bot[quantization]'"
        ) from exc


@dataclass
class _Base:
    model: Any
    tokenizer: Tokenizer
    has_nl: bool
    folder: Path
    prompt_format: PromptFormat  # what the bot serves this model with (same loader, same detection)


def serving_template(fmt: PromptFormat) -> str:
    """The template that trains on exactly the text the bot sends a model served in `fmt`: the
    format itself, or for a base model (plain) the chat format with the same newlines, whose
    transcript is the same text."""
    if fmt.name in TEMPLATES:
        return fmt.name
    return "rinna" if fmt.newline == "<NL>" else "line"


def load_base(config: TrainConfig) -> _Base:
    """The base model through the bot's own loader (demo, folders and hub ids alike), 8-bit or
    4-bit on the GPU when asked (`check_quantize` has already refused what cannot work)."""
    from bot.engines.transformers.loader import load_model

    loaded = load_model(config.base, replace(config.load, quantization=config.quantize))
    if not loaded.supports_lora:
        raise TrainingError(
            f"{config.base} cannot take a LoRA adapter (GPTSAN runs on the bot's own code, "
            "which peft cannot adapt); choose another --base"
        )
    model = loaded.model
    if config.quantize != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return _Base(
        model,
        loaded.tokenizer,
        loaded.tokenizer.has_piece("<NL>"),
        loaded.folder,
        loaded.prompt_format,
    )


def default_target_modules(model: Any) -> list[str]:
    model_type = getattr(model.config, "model_type", "")
    if model_type in TARGET_MODULES:
        return TARGET_MODULES[model_type]
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    if model_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[model_type])
    raise TrainingError(
        f"no default LoRA targets for model type {model_type!r}; name them with --target-modules"
    )


def token_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed cross-entropy over the label tokens, and how many there were."""
    import torch.nn.functional as F

    device = next(p for p in model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    return loss, int((labels != IGNORE).sum())


def evaluate(model: Any, items: Sequence[EncodedExample], batch_size: int, pad_id: int) -> float:
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            loss, n = token_loss(model, collate(items[start : start + batch_size], pad_id))
            total, count = total + float(loss), count + n
    if was_training:
        model.train()
    return total / max(count, 1)


# --- the run ----------------------------------------------------------------------------------


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def validate(config: TrainConfig) -> None:
    """Checks that need neither the model nor the data, so mistakes cost no loading time."""
    from persona.registry import parse_persona

    try:
        parse_persona({"name": config.name}, "--name")
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    if config.template not in (*TEMPLATES, "auto"):
        raise TrainingError(f"--template must be one of {', '.join(TEMPLATES)}")
    for name, value in [
        ("--rank", config.rank),
        ("--batch-size", config.batch_size),
        ("--cutoff", config.cutoff),
        ("--grad-accum", config.grad_accum),
    ]:
        if value < 1:
            raise TrainingError(f"{name} must be at least 1")
    if config.cutoff < 8:
        raise TrainingError("--cutoff must be at least 8 tokens")
    if not 0 <= config.eval_fraction < 1:
        raise TrainingError("--eval-fraction must be at least 0 and below 1")
    if config.lr <= 0 or config.epochs <= 0 or not 0 <= config.dropout < 1:
        raise TrainingError("--lr and --epochs must be positive and --dropout in [0, 1)")
    if not Path(config.data).is_file():
        raise TrainingError(f"no such data file: {config.data}")
    out = config.resolved_output_dir()
    persona_file = Path(config.persona_dir) / f"{config.name}.toml"
    if not config.overwrite:
        for path in (out / "adapter", persona_file):
            if path.exists():
                raise TrainingError(f"{path} already exists; pass --overwrite to replace it")
    check_quantize(config.quantize, config.load.device)


def train(config: TrainConfig, progress: Progress = _stderr) -> TrainResult:
    """Train, checkpoint and write the adapter and its persona file."""
    import torch
    from peft import LoraConfig, get_peft_model

    started = time.monotonic()
    validate(config)
    data_stats = DataStats()
    examples = load_pairs(config.data, data_stats)
    if not examples:
        raise TrainingError(f"{config.data} has no usable examples ({_skips(data_stats)})")

    progress(f"loading {config.base} …")
    base = load_base(config)
    template = config.template
    if template == "auto":
        template = serving_template(base.prompt_format)
    tokenizer = base.tokenizer
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else (tokenizer.eos_id or 0)

    encoded = [
        e
        for ex in examples
        if (
            e := encode_example(tokenizer, template, ex, config.cutoff, data_stats, config.preamble)
        )
        is not None
    ]
    data_stats.used = len(encoded)
    if not encoded:
        raise TrainingError(f"no example fits --cutoff {config.cutoff} ({_skips(data_stats)})")
    train_items, eval_items = split_examples(
        encoded, config.eval_fraction, config.seed, config.max_eval_examples
    )
    progress(
        f"data: {data_stats.records} records, {len(train_items)} for training, "
        f"{len(eval_items)} held out; template {template}, cutoff {config.cutoff} "
        f"({data_stats.context_turns_dropped} old context turns dropped, "
        f"{data_stats.replies_truncated} replies cut short; skipped: {_skips(data_stats)})"
    )

    torch.manual_seed(config.seed)
    targets = config.target_modules or default_target_modules(base.model)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # transformers' deprecation notice, raised inside peft
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
            model = get_peft_model(base.model, lora)
    except ValueError as exc:  # e.g. a target module the model does not have
        raise TrainingError(f"cannot add LoRA to {targets}: {exc}") from exc
    model.peft_config["default"].base_model_name_or_path = _base_reference(config.base)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    progress(
        f"LoRA r={config.rank} alpha={config.alpha} on {targets}: {trainable:,} trainable "
        f"of {total_params:,} parameters"
    )

    per_epoch = math.ceil(len(train_items) / config.batch_size / config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    eval_every = config.eval_every if config.eval_every is not None else config.save_every
    log_every = config.log_every or max(1, total_steps // 20)
    warmup = round(total_steps * config.warmup_ratio)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    out = config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    eval_history: list[tuple[int, float]] = []
    train_history: list[tuple[int, float]] = []
    checkpoints: list[Path] = []

    def held_out(step: int) -> None:
        if eval_items:
            loss = evaluate(model, eval_items, config.batch_size, pad_id)
            eval_history.append((step, loss))
            progress(f"step {step}/{total_steps}: held-out loss {loss:.4f}")

    def checkpoint(step: int) -> None:
        folder = out / "checkpoints" / f"step-{step:06d}"
        _save_adapter(model, folder, {"step": step, "template": template, "base": config.base})
        checkpoints.append(folder)
        while config.keep_checkpoints and len(checkpoints) > config.keep_checkpoints:
            shutil.rmtree(checkpoints.pop(0), ignore_errors=True)
        progress(f"step {step}/{total_steps}: saved {folder}")

    held_out(0)
    rng = random.Random(config.seed)
    step, micro, running, running_n = 0, 0, 0.0, 0
    tick = time.monotonic()
    model.train()
    try:
        while step < total_steps:
            order = list(range(len(train_items)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                batch = collate(
                    [train_items[i] for i in order[start : start + config.batch_size]], pad_id
                )
                loss_sum, n_tokens = token_loss(model, batch)
                loss = loss_sum / max(n_tokens, 1)
                (loss / config.grad_accum).backward()
                running, running_n = running + loss.item(), running_n + 1
                micro += 1
                if micro % config.grad_accum:
                    continue
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % log_every == 0 or step == total_steps:
                    elapsed = time.monotonic() - tick
                    rate = step / elapsed if elapsed > 0 else 0.0
                    eta = (total_steps - step) / rate if rate else 0.0
                    mean = running / max(running_n, 1)
                    train_history.append((step, mean))
                    progress(
                        f"step {step}/{total_steps} · epoch {step / per_epoch:.2f} · "
                        f"loss {mean:.4f} · lr {scheduler.get_last_lr()[0]:.2e} · "
                        f"{rate:.2f} steps/s · eta {eta:.0f} s"
                    )
                    running, running_n = 0.0, 0
                if eval_every and step % eval_every == 0 and step < total_steps:
                    held_out(step)
                if config.save_every and step % config.save_every == 0 and step < total_steps:
                    checkpoint(step)
                if step >= total_steps:
                    break
    except KeyboardInterrupt:
        checkpoint(step)
        progress(f"interrupted at step {step}; the adapter so far is in {checkpoints[-1]}")
        raise

    held_out(step)
    adapter_dir = out / "adapter"
    _replace_adapter(model, adapter_dir, {"step": step, "template": template, "base": config.base})
    persona_file = write_persona_file(config, template, adapter_dir)
    result = TrainResult(
        output_dir=out,
        adapter_dir=adapter_dir,
        persona_file=persona_file,
        template=template,
        steps=step,
        train_examples=len(train_items),
        eval_examples=len(eval_items),
        eval_history=eval_history,
        train_history=train_history,
        checkpoints=list(checkpoints),
        data=data_stats,
        seconds=time.monotonic() - started,
    )
    _write_summary(config, result)
    return result


def _skips(stats: DataStats) -> str:
    return ", ".join(f"{k}: {n}" for k, n in stats.skipped.items()) or "none"


def _base_reference(spec: str) -> str:
    """What the adapter records as its base: the name the user gave, a folder made absolute."""
    from bot.models.demo import DEMO_NAME

    spec = spec.strip()
    path = Path(spec).expanduser()
    return str(path.resolve()) if spec != DEMO_NAME and path.exists() else spec


def _save_adapter(model: Any, folder: Path, info: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # LoRA never touches the embeddings; saying so spares peft a hub lookup of the base.
    model.save_pretrained(str(folder), save_embedding_layers=False)
    (folder / "persona_training.json").write_text(
        json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8"
    )


def _replace_adapter(model: Any, target: Path, info: dict[str, Any]) -> None:
    """Save into a fresh folder beside `target`, then swap it in, so the adapter that was there
    survives a save that fails or is killed halfway (--overwrite of a good persona)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        _save_adapter(model, staging, info)
        _swap_in(staging, target)
    finally:
        # After a swap this holds the old adapter; after a failure, the partial new one.
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(new: Path, target: Path) -> None:
    """Put folder `new` at `target`. An existing `target` ends up at `new`: exchanged in one
    step where the kernel offers it (Linux renameat2), else with two renames, where a crash in
    between leaves the old adapter at `new` rather than losing it."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    parked = new.with_name(new.name + ".old")
    os.rename(target, parked)
    os.rename(new, target)
    os.rename(parked, new)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    if sys.platform != "linux":
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return done == 0


def _toml_string(value: str) -> str:
    # A JSON string with unescaped non-ASCII is a valid TOML basic string.
    return json.dumps(value, ensure_ascii=False)


def write_persona_file(config: TrainConfig, template: str, adapter_dir: Path) -> Path:
    """`PERSONA_DIR/NAME.toml` in persona/registry.py's format, plus `adapter`."""
    persona_dir = Path(config.persona_dir)
    persona_dir.mkdir(parents=True, exist_ok=True)
    try:
        adapter_ref = adapter_dir.resolve().relative_to(persona_dir.resolve()).as_posix()
    except ValueError:
        adapter_ref = str(adapter_dir.resolve())
    description = (
        config.description or f"{Path(config.data).name} で学習した LoRA アダプターのペルソナ。"
    )
    sampling = "\n".join(f"{k} = {v}" for k, v in PERSONA_SAMPLING.items())
    text = f"""# Written by `python -m bot persona train` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.
# Trained on {Path(config.data).name}. If the data came from NUCC (CC BY-NC-ND 4.0), this adapter
# is for research use only: do not distribute it.
name = {_toml_string(config.name)}
display_name = {_toml_string(config.display_name or config.name)}
description = {_toml_string(description)}
prompt_format = {_toml_string(template)}
base_models = [{_toml_string(config.base.strip())}]
preamble = {_toml_string(config.preamble)}
adapter = {_toml_string(adapter_ref)}

[sampling]
{sampling}
"""
    target = persona_dir / f"{config.name}.toml"
    # Written beside and renamed over, so a crash never leaves a torn persona file.
    staging = target.with_name(f".{target.name}.new")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, target)
    return target


def _write_summary(config: TrainConfig, result: TrainResult) -> None:
    settings = {k: v for k, v in asdict(config).items() if k != "load"}
    settings["load"] = {k: v for k, v in asdict(config.load).items() if k != "hf_token"}
    summary = {
        "settings": settings,
        "template": result.template,
        "steps": result.steps,
        "train_examples": result.train_examples,
        "eval_examples": result.eval_examples,
        "eval_history": result.eval_history,
        "train_history": result.train_history,
        "data": asdict(result.data),
        "seconds": round(result.seconds, 1),
    }
    (result.output_dir / "training.json").write_text(
        json.dumps(summary, ensure_ascii=False, indent=2, default=str), encoding="utf-8"
    )
