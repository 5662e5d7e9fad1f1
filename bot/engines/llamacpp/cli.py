"""`python -m bot convert MODEL --to gguf --quant q8_0|q4_k_m|f16`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.engines.contract import LoadOptions
from bot.engines.llamacpp.convert import QUANTS, convert
from bot.errors import ModelLoadError


def add_parser(commands: Any) -> None:
    convert_parser = commands.add_parser(
        "convert", help="convert a GPTNeoX or GPT-2 model to GGUF for ENGINE=llamacpp"
    )
    convert_parser.add_argument("model", help="catalogue name, hub id or folder")
    convert_parser.add_argument("--to", choices=["gguf"], default="gguf")
    convert_parser.add_argument("--quant", choices=QUANTS, default="q4_k_m")


def _progress_bar(total: int, _: int) -> Callable[[int], Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit="tensor", desc="変換中", file=sys.stderr)

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def run(args: argparse.Namespace, cache_dir: Path, prompt_format: str, token: str | None) -> int:
    import logging

    logging.getLogger("gguf").setLevel(logging.WARNING)  # the progress bar says enough
    options = LoadOptions(
        device="cpu", cache_dir=cache_dir, prompt_format=prompt_format, hf_token=token
    )
    try:
        converted = convert(args.model, args.quant, options, _progress_bar)
    except ModelLoadError as exc:
        print(f"エラー: {exc.user_message}", file=sys.stderr)
        return 2
    print(
        f"{converted.path}（{converted.quant}、{converted.bytes / 1e6:,.1f} MB）\n"
        f"使い方: ENGINE=llamacpp MODEL={args.model} python -m bot console"
    )
    return 0
