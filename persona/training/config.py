"""What a training run is asked to do, and the checks on it that need neither model nor data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bot.engines.contract import LoadOptions

TEMPLATES = ("rinna", "line", "instruct")
QUANTIZE = ("none", "8bit", "4bit")


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
