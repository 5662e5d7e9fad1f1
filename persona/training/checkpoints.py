"""The adapter saved as checkpoints and, at the end, swapped in whole; and the persona file that
points at it, never left half-written."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persona.training.config import TrainConfig

# What the persona file asks of the sampler; short casual replies suit conversation data.
PERSONA_SAMPLING = {"temperature": 0.7, "repetition_penalty": 1.1}


def save_checkpoint(
    model: Any, folder: Path, info: dict[str, Any], kept: list[Path], keep: int
) -> None:
    """Save an intermediate adapter into `folder` and add it to `kept`, deleting the oldest
    beyond `keep` (0 keeps them all) so a long run does not fill the disk."""
    _save_adapter(model, folder, info)
    kept.append(folder)
    while keep and len(kept) > keep:
        shutil.rmtree(kept.pop(0), ignore_errors=True)


def _save_adapter(model: Any, folder: Path, info: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # LoRA never touches the embeddings; saying so spares peft a hub lookup of the base.
    model.save_pretrained(str(folder), save_embedding_layers=False)
    (folder / "persona_training.json").write_text(
        json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8"
    )


def replace_adapter(model: Any, target: Path, info: dict[str, Any]) -> None:
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
