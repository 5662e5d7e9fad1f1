"""What a run produced, and its record in `training.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from persona.training.config import TrainConfig
from persona.training.data import DataStats


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


def write_summary(config: TrainConfig, result: TrainResult) -> None:
    # The load options carry the user's hub token: never written to disk.
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
