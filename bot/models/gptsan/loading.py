"""Load a GPTSAN checkpoint as the hub has it: `config.json`, weights in `model.safetensors` or
`pytorch_model.bin` (or their sharded index), `vocab.txt` and `emoji.json`.

Every tensor the config implies must be there with its shape, and nothing else may be: a
checkpoint that does not fit is refused whole, naming the tensor, never half-loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from bot.errors import ModelLoadError, shorten
from bot.models.gptsan.config import config_from_dict, is_gptsan_config, read_config
from bot.models.gptsan.modeling import GPTSanForGeneration
from bot.models.gptsan.tokenizer import EMOJI_FILE, VOCAB_FILE, GPTSanTokenizer

_TIED = "lm_head.weight"  # .bin files repeat the embedding under this name
_MISSPELT = "model.sqout."

log = logging.getLogger(__name__)


def is_gptsan_folder(folder: Path) -> bool:
    """True for a folder whose config.json names GPTSAN (an unreadable one is left to the
    general loader to report)."""
    try:
        return is_gptsan_config(read_config(folder))
    except (OSError, ValueError):
        return False


def _weight_files(folder: Path) -> list[Path]:
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (folder / single).exists():
            return [folder / single]
        if (folder / index).exists():
            shards = json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"]
            return [folder / name for name in sorted(set(shards.values()))]
    raise ModelLoadError(
        f"フォルダ {shorten(str(folder), 60)} に GPTSAN の重み（model.safetensors か pytorch_model.bin）がありません。"
    )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(Path(folder)):
        if file.suffix == ".safetensors":
            state.update(load_file(str(file)))
        else:
            state.update(_torch_load(file))
    return state


def _torch_load(file: Path) -> dict[str, torch.Tensor]:
    try:  # memory-mapped: the file is not read into memory twice
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files from before torch 1.6 cannot be mapped
        return torch.load(file, map_location="cpu", weights_only=True)


def check_weights(expected: dict[str, torch.Size], state: dict[str, torch.Tensor]) -> None:
    """Raise ModelLoadError naming the first tensor that is missing, misshapen or unknown."""
    for name, shape in expected.items():
        if name not in state:
            raise ModelLoadError(
                f"GPTSAN のチェックポイントにテンソル「{name}」がありません。"
                "ダウンロードし直すか、config.json と重みが同じモデルのものか確かめてください。"
            )
        if state[name].shape != shape:
            raise ModelLoadError(
                f"GPTSAN のチェックポイントのテンソル「{name}」の形が {tuple(state[name].shape)} で、"
                f"config.json から決まる {tuple(shape)} と合いません。"
                "config.json と重みが同じモデルのものか確かめてください。"
            )
    for name in state:
        if name not in expected and name != _TIED:
            raise ModelLoadError(
                f"GPTSAN のチェックポイントに config.json では使わないテンソル「{name}」があります。"
                "config.json と重みが同じモデルのものか確かめてください。"
            )
    tied = state.get(_TIED)
    embed = expected["model.embed_tokens.weight"]
    if tied is not None and tied.shape != embed:
        raise ModelLoadError(
            f"GPTSAN のチェックポイントのテンソル「{_TIED}」の形が {tuple(tied.shape)} で、"
            f"埋め込み {tuple(embed)} と合いません。"
        )


def spout_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 4.x's converter from the original TensorFlow checkpoint wrote the spout's
    layers as `model.sqout.N.weight` (sic), which 4.x itself then ignored and initialised at
    random; here they load as the spout they are."""
    return {
        ("model.spout." + name.removeprefix(_MISSPELT) if name.startswith(_MISSPELT) else name): t
        for name, t in state.items()
    }


def load_gptsan(folder: Path, dtype: torch.dtype, device: str) -> GPTSanForGeneration:
    """The model with the checkpoint's weights, in `dtype` on `device`, in eval mode.

    A checkpoint without any spout weights (though its config has `d_spout`) loads without the
    spout input, which chat never uses; one with only some of them is refused."""
    folder = Path(folder)
    config = config_from_dict(read_config(folder))
    state = spout_names(read_weights(folder))
    if config.d_spout and not any(name.startswith("model.spout.") for name in state):
        log.info("%s has no spout weights; loading it without the spout input", folder)
        config.d_spout = 0
    with torch.device("meta"):  # no second copy of the weights while loading
        model = GPTSanForGeneration(config)
    expected = {name: t.shape for name, t in model.state_dict().items()}
    check_weights(expected, state)
    state.pop(_TIED, None)
    for name in list(state):  # one tensor at a time: never two full copies of the weights
        state[name] = state[name].to(dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_tokenizer(folder: Path) -> GPTSanTokenizer:
    folder = Path(folder)
    for name in (VOCAB_FILE, EMOJI_FILE):
        if not (folder / name).exists():
            raise ModelLoadError(
                f"フォルダ {shorten(str(folder), 60)} に GPTSAN のトークナイザー（{name}）がありません。"
            )
    return GPTSanTokenizer.from_folder(folder)
