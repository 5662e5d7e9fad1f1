"""How many optimizer steps a run takes, when it logs, and the learning rate at each step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from persona.training.config import TrainConfig


@dataclass(frozen=True)
class Plan:
    per_epoch: int  # optimizer steps in one pass over the training examples
    total_steps: int
    eval_every: int  # 0: held-out loss only before and after
    log_every: int
    warmup: int


def plan(config: TrainConfig, train_examples: int) -> Plan:
    per_epoch = math.ceil(train_examples / config.batch_size / config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(per_epoch * config.epochs))
    return Plan(
        per_epoch=per_epoch,
        total_steps=total_steps,
        eval_every=config.eval_every if config.eval_every is not None else config.save_every,
        log_every=config.log_every or max(1, total_steps // 20),
        warmup=round(total_steps * config.warmup_ratio),
    )


def lr_factor(step: int, warmup: int, total_steps: int) -> float:
    """Linear warm-up, then linear decay to zero."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def scheduler(optimizer: Any, steps: Plan) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps.warmup, steps.total_steps)
    )
