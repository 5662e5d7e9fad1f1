"""LoRA persona adapters on the one model the worker owns.

Adapters load on first use and stay cached (least recently used goes first). Before anything
touches the model, an adapter is checked against it: made for this base model (by name), and
every adapted layer exists with matching shapes, so a mismatched adapter is refused whole,
never half-loaded. Runs only on the model worker's thread: a peft model is not thread-safe.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

from bot.engines.contract import LoadedModel
from bot.errors import AdapterMismatch
from bot.models.catalogue import find_entry

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


def _names_for(spec: str) -> set[str]:
    spec = spec.strip()
    names = {spec, spec.lower()}
    entry = find_entry(spec)
    if entry is not None:
        names |= {entry.name, entry.hub_id, entry.hub_id.lower()}
    path = Path(spec).expanduser()
    if path.exists():
        names.add(str(path.resolve()))
    # A local copy of a hub model is usually named after it: ".../japanese-gpt-neox-3.6b".
    names.add(Path(spec.rstrip("/")).name.lower())
    return {n for n in names if n}


def adapter_base(adapter_dir: Path) -> str | None:
    config = adapter_dir / "adapter_config.json"
    if not config.exists():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")


def check_adapter(model: LoadedModel, adapter_dir: Path, base_models: tuple[str, ...] = ()) -> None:
    """Raise AdapterMismatch, saying why, unless the adapter fits `model`.

    Fits by name when the base recorded in adapter_config.json, or one the persona file lists
    in `base_models` (say, a local copy of the hub model), names the current model; and by
    shape always."""
    label = adapter_dir.name if adapter_dir.name != "adapter" else adapter_dir.parent.name
    if not model.supports_lora:
        raise AdapterMismatch(
            f"今のモデル（{model.name}）は LoRA アダプターに対応していないため、ペルソナ"
            f"「{label}」は使えません。アダプターのないペルソナを選ぶか、/model で別のモデルに"
            "切り替えてください。"
        )
    if not (adapter_dir / "adapter_config.json").exists():
        raise AdapterMismatch(f"ペルソナのアダプター（{adapter_dir}）が見つかりません。")
    model_names = _names_for(model.name) | _names_for(str(model.folder))
    declared = [b for b in (adapter_base(adapter_dir), *base_models) if b]
    if declared and not any(_names_for(b) & model_names for b in declared):
        raise AdapterMismatch(
            f"アダプター「{label}」は {declared[0]} 用に学習されたもので、今のモデル"
            f"（{model.name}）では使えません。/model でそのモデルに切り替えてください。"
        )
    problems = _shape_problems(model.model, adapter_dir)
    if problems:
        raise AdapterMismatch(
            f"アダプター「{label}」は今のモデル（{model.name}）と形が合いません: {problems[0]}"
        )


def _base_module(model: Any) -> Any:
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def _shape_problems(model: Any, adapter_dir: Path) -> list[str]:
    """Every LoRA weight must sit on an existing layer with matching in/out sizes."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.exists():
        return [] if (adapter_dir / "adapter_model.bin").exists() else ["重みファイルがありません"]
    from safetensors import safe_open

    base = _base_module(model)
    problems = []
    with safe_open(str(weights), framework="pt") as tensors:
        for key in tensors.keys():  # noqa: SIM118 - safe_open has no __iter__
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
            try:
                module = base.get_submodule(module_name)
            except AttributeError:
                problems.append(f"層 {module_name} がありません")
                continue
            shape = tensors.get_slice(key).get_shape()
            inputs, outputs = _in_out(module)
            if ".lora_A." in key and inputs is not None and shape[-1] != inputs:
                problems.append(f"{module_name} の入力 {inputs} ≠ {shape[-1]}")
            if ".lora_B." in key and outputs is not None and shape[0] != outputs:
                problems.append(f"{module_name} の出力 {outputs} ≠ {shape[0]}")
    return problems


def _in_out(module: Any) -> tuple[int | None, int | None]:
    base = getattr(module, "base_layer", module)  # a layer peft already wrapped
    if hasattr(base, "in_features"):
        return base.in_features, base.out_features
    weight = getattr(base, "weight", None)  # GPT-2's Conv1D stores (in, out)
    if weight is not None and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1])
    return None, None


class AdapterCache:
    """The adapters loaded into the current model, most recently used last."""

    def __init__(self, max_loaded: int = 4) -> None:
        self.max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self._model: LoadedModel | None = None  # the model these adapters live in

    def ensure(
        self,
        model: LoadedModel,
        name: str,
        adapter_dir: Path,
        base_models: tuple[str, ...] = (),
        pinned: frozenset[str] = frozenset(),
    ) -> None:
        """Make adapter `name` available on `model`, loading (and evicting) as needed."""
        if self._model is not model:  # a new model: nothing is loaded in it yet
            self.reset()
            self._model = model
        if name in self._loaded and self._loaded[name] == adapter_dir:
            self._loaded.move_to_end(name)
            return
        check_adapter(model, adapter_dir, base_models)
        self._load(model, name, adapter_dir)
        self._evict(model, pinned | {name})

    def _load(self, model: LoadedModel, name: str, adapter_dir: Path) -> None:
        from peft import PeftModel

        started = time.monotonic()
        if name in self._loaded:
            model.model.delete_adapter(name)
            del self._loaded[name]
        if isinstance(model.model, PeftModel):
            model.model.load_adapter(str(adapter_dir), adapter_name=name)
        else:
            model.model = PeftModel.from_pretrained(
                model.model, str(adapter_dir), adapter_name=name
            )
        model.model.eval()
        self._loaded[name] = adapter_dir
        log.info(
            "loaded adapter %s from %s in %.0f ms",
            name,
            adapter_dir,
            (time.monotonic() - started) * 1000,
        )

    def _evict(self, model: LoadedModel, keep: frozenset[str]) -> None:
        for name in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                return
            if name not in keep:
                with warnings.catch_warnings():  # "adapter X was active": rows name theirs
                    warnings.filterwarnings("ignore", "Adapter .* was active")
                    model.model.delete_adapter(name)
                del self._loaded[name]
                log.info("unloaded adapter %s (cache holds %d)", name, self.max_loaded)

    def reset(self) -> None:
        """Forget every adapter (the model they were loaded into is gone)."""
        self._loaded.clear()
        self._model = None

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)
