"""`python -m bot persona prepare nucc PATH... -o pairs.jsonl` and `python -m bot persona train`.

`main(argv, defaults)` takes the arguments after `persona` and the bot's load options (from its
settings: DEVICE, DTYPE, MODEL_CACHE_DIR, HF_TOKEN, PROMPT_FORMAT), which flags override. Statistics and progress go to stderr, errors
are one line starting with `error:`; the exit status is 0 on success, 1 when nothing usable came
out, 2 for a mistake in the command or its input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bot.engines.contract import LoadOptions

NUCC_LICENCE_WARNING = (
    "note: NUCC is licensed CC BY-NC-ND 4.0 (research and education only). Keep the pairs file "
    "and any adapter trained on it to yourself: never commit, ship or publish them."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot persona", description="Prepare dialogue data and train personas."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="turn a corpus into training pairs")
    corpora = prepare.add_subparsers(dest="corpus", required=True)
    nucc = corpora.add_parser("nucc", help="名大会話コーパス (NUCC) files or folders")
    nucc.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="NUCC .txt files, or folders searched for *.txt",
    )
    nucc.add_argument("-o", "--output", type=Path, required=True, help="pairs.jsonl to write")
    nucc.add_argument(
        "--context", type=int, default=4, help="turns of context kept before each reply (default 4)"
    )
    nucc.add_argument(
        "--mask",
        default="〇〇",
        help="text that replaces ＊＊＊ (default 〇〇); --keep-mask keeps it",
    )
    nucc.add_argument("--keep-mask", action="store_true", help="leave ＊＊＊ as it is")
    nucc.add_argument(
        "--keep-nonparticipant",
        action="store_true",
        help="keep Ｘ (waiters, phone calls) as context; never as a reply",
    )
    nucc.add_argument(
        "--encoding",
        default="auto",
        help="auto (UTF-8, then EUC-JP, then Shift_JIS) or a codec name",
    )

    train = commands.add_parser("train", help="train a LoRA adapter and write its persona file")
    train.add_argument(
        "--base", required=True, help="base model: demo, a model folder or a Hugging Face id"
    )
    train.add_argument("--data", required=True, type=Path, help="pairs.jsonl")
    train.add_argument("--name", required=True, help="persona name (letters, digits, - or _)")
    train.add_argument(
        "--template",
        choices=["auto", "rinna", "line", "instruct"],
        default="auto",
        help="prompt template; auto: the format the bot serves the base model in "
        "(PROMPT_FORMAT, else detected as the bot does)",
    )
    train.add_argument("--epochs", type=float, default=3.0)
    train.add_argument("--lr", type=float, default=3e-4)
    train.add_argument("--rank", type=int, default=8)
    train.add_argument("--alpha", type=int, default=16)
    train.add_argument("--dropout", type=float, default=0.05)
    train.add_argument("--cutoff", type=int, default=256, help="tokens per example (default 256)")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    train.add_argument(
        "--eval-fraction",
        type=float,
        default=0.1,
        help="share of examples held out for the held-out loss",
    )
    train.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    train.add_argument(
        "--save-every",
        type=int,
        default=200,
        help="save a checkpoint every N steps (0: only at the end)",
    )
    train.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="held-out loss every N steps (default: as --save-every)",
    )
    train.add_argument(
        "--keep-checkpoints", type=int, default=3, help="newest checkpoints kept (0 keeps all)"
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--target-modules",
        default=None,
        help="comma-separated module names (default: per model type)",
    )
    train.add_argument(
        "--quantize",
        choices=["none", "8bit", "4bit"],
        default="none",
        help="load the base in 8-bit or 4-bit (CUDA and bitsandbytes only)",
    )
    train.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="adapter, checkpoints and log (default PERSONA_DIR/NAME)",
    )
    train.add_argument(
        "--persona-dir",
        type=Path,
        default=Path("data/personas"),
        help="where NAME.toml is written (default data/personas)",
    )
    train.add_argument("--display-name", default="")
    train.add_argument("--description", default="")
    train.add_argument(
        "--preamble",
        default="",
        help="text put before every training prompt and into the persona file",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing adapter and persona file of that name",
    )
    train.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default=None,
        help="default: DEVICE from the settings",
    )
    train.add_argument(
        "--dtype",
        choices=["auto", "fp16", "bf16", "fp32"],
        default=None,
        help="default: DTYPE from the settings",
    )
    train.add_argument(
        "--model-cache-dir",
        type=Path,
        default=None,
        help="default: MODEL_CACHE_DIR from the settings",
    )
    return parser


def main(argv: list[str], defaults: LoadOptions | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            return prepare_nucc(args)
        return train(args, defaults or LoadOptions())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def prepare_nucc(args: argparse.Namespace) -> int:
    from persona.nucc import NuccOptions, find_files, write_examples

    try:
        options = NuccOptions(
            context_turns=args.context,
            mask=None if args.keep_mask else args.mask,
            keep_nonparticipant=args.keep_nonparticipant,
            encoding=args.encoding,
        )
        if not find_files(args.paths):
            print(f"error: no .txt files under {', '.join(map(str, args.paths))}", file=sys.stderr)
            return 2
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a failed run never leaves half a file.
    fd, scratch = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            stats = write_examples(args.paths, out, options)
        os.replace(scratch, output)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    print(stats.report(), file=sys.stderr)
    print(f"wrote {stats.examples} examples to {output}", file=sys.stderr)
    print(NUCC_LICENCE_WARNING, file=sys.stderr)
    if stats.examples == 0:
        print("error: no examples: are these NUCC transcripts?", file=sys.stderr)
        return 1
    return 0


def train(args: argparse.Namespace, defaults: LoadOptions) -> int:
    from bot.errors import ModelLoadError
    from persona.training import TrainConfig, TrainingError
    from persona.training import train as run_training

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The bot's own load options (PROMPT_FORMAT included, so training matches serving).
    load = replace(
        defaults,
        device=args.device or defaults.device,
        dtype=args.dtype or defaults.dtype,
        cache_dir=args.model_cache_dir or defaults.cache_dir,
    )
    targets = [t.strip() for t in args.target_modules.split(",")] if args.target_modules else None
    config = TrainConfig(
        base=args.base,
        data=args.data,
        name=args.name,
        template=args.template,
        epochs=args.epochs,
        lr=args.lr,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        cutoff=args.cutoff,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        eval_fraction=args.eval_fraction,
        max_steps=args.max_steps,
        save_every=args.save_every,
        eval_every=args.eval_every,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        quantize=args.quantize,
        target_modules=targets,
        output_dir=args.output_dir,
        persona_dir=args.persona_dir,
        display_name=args.display_name,
        description=args.description,
        preamble=args.preamble,
        overwrite=args.overwrite,
        load=load,
    )
    try:
        result = run_training(config)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 2
    first, last = result.initial_eval_loss, result.final_eval_loss
    loss = f"held-out loss {first:.4f} → {last:.4f}, " if first is not None else ""
    print(
        f"trained {result.steps} steps in {result.seconds:.0f} s ({loss}template "
        f"{result.template})\nadapter: {result.adapter_dir}\npersona file: {result.persona_file}"
    )
    return 0
