"""Asking for what the machine cannot do fails at start-up with one clear line."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bot.engines.transformers.loader import (
    LoadOptions,
    load_model,
    quantization_config,
    resolve_device,
    resolve_dtype,
)
from bot.errors import ModelLoadError


def test_fp16_on_a_cpu_is_refused():
    with pytest.raises(ModelLoadError) as caught:
        resolve_dtype("fp16", "cpu")
    assert "DTYPE=fp32" in caught.value.user_message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ModelLoadError) as caught:
        resolve_device("cuda")
    assert "DEVICE=auto" in caught.value.user_message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_picks_the_cpu_and_fp32_without_a_gpu():
    assert resolve_device("auto") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantization_on_a_cpu_is_refused(quantization):
    with pytest.raises(ModelLoadError) as caught:
        quantization_config(quantization, "cpu", torch.float32)
    assert "QUANTIZATION=none" in caught.value.user_message


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here"
)
def test_quantization_without_bitsandbytes_says_how_to_install_it():
    with pytest.raises(ModelLoadError) as caught:
        quantization_config("4bit", "cuda", torch.float16)
    assert "bitsandbytes" in caught.value.user_message
    assert "pip install" in caught.value.user_message


def test_no_quantization_needs_nothing():
    assert quantization_config("none", "cpu", torch.float32) is None


def test_impossible_options_fail_before_any_download(tmp_path):
    options = LoadOptions(device="cpu", dtype="fp16", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError):
        load_model("rinna-3.6b-ppo", options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [("no such model!", "見つかりません"), ("/definitely/not/here", "見つかりません")],
)
def test_unknown_names_are_answered_clearly(tmp_path, spec, fragment):
    with pytest.raises(ModelLoadError) as caught:
        load_model(spec, LoadOptions(device="cpu", cache_dir=tmp_path))
    assert fragment in caught.value.user_message and "MODEL=demo" in caught.value.user_message


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(tmp_path), LoadOptions(device="cpu", cache_dir=tmp_path))
    assert "config.json" in caught.value.user_message
