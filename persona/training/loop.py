"""The run itself: data and base prepared, the plain torch loop with its held-out loss and
checkpoints, and the adapter, persona file and summary written at the end."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from persona.training.adapter import add_lora, load_base, serving_template
from persona.training.checkpoints import replace_adapter, save_checkpoint, write_persona_file
from persona.training.config import TrainConfig, TrainingError, validate
from persona.training.data import (
    IGNORE,
    DataStats,
    EncodedExample,
    collate,
    encode_example,
    load_pairs,
    split_examples,
)
from persona.training.result import TrainResult, write_summary
from persona.training.schedule import plan, scheduler

Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train(config: TrainConfig, progress: Progress = _stderr) -> TrainResult:
    """Train, checkpoint and write the adapter and its persona file."""
    import torch

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

    torch.manual_seed(config.seed)  # before the LoRA weights are drawn
    model, targets = add_lora(base.model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in model.parameters())
    progress(
        f"LoRA r={config.rank} alpha={config.alpha} on {targets}: {trainable:,} trainable "
        f"of {total_params:,} parameters"
    )

    steps = plan(config, len(train_items))
    total_steps = steps.total_steps
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    lr_schedule = scheduler(optimizer, steps)

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
        info = {"step": step, "template": template, "base": config.base}
        save_checkpoint(model, folder, info, checkpoints, config.keep_checkpoints)
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
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % steps.log_every == 0 or step == total_steps:
                    elapsed = time.monotonic() - tick
                    rate = step / elapsed if elapsed > 0 else 0.0
                    eta = (total_steps - step) / rate if rate else 0.0
                    mean = running / max(running_n, 1)
                    train_history.append((step, mean))
                    progress(
                        f"step {step}/{total_steps} · epoch {step / steps.per_epoch:.2f} · "
                        f"loss {mean:.4f} · lr {lr_schedule.get_last_lr()[0]:.2e} · "
                        f"{rate:.2f} steps/s · eta {eta:.0f} s"
                    )
                    running, running_n = 0.0, 0
                if steps.eval_every and step % steps.eval_every == 0 and step < total_steps:
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
    replace_adapter(model, adapter_dir, {"step": step, "template": template, "base": config.base})
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
    write_summary(config, result)
    return result


def _skips(stats: DataStats) -> str:
    return ", ".join(f"{k}: {n}" for k, n in stats.skipped.items()) or "none"


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
