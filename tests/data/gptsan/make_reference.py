"""Build the GPTSAN reference fixtures with transformers 4.40.2, the last release that had it.

Run from the repository root with a throwaway venv (never the project's own):

    python3 -m venv /tmp/tf440 && /tmp/tf440/bin/pip install torch==2.13.0 \
        && /tmp/tf440/bin/pip install transformers==4.40.2 sentencepiece safetensors
    /tmp/tf440/bin/python tests/data/gptsan/make_reference.py

It writes, next to itself: a small vocabulary (`vocab.txt`, `emoji.json`), two tiny random
checkpoints in the hub layout (`ext/`: extension layers, fp16 `model.safetensors`; `spout/`: a
spout, fp32 `pytorch_model.bin`), their logits and greedy continuations for a few inputs with
and without a prefix (`reference.safetensors`, `reference.json`), and the 4.x tokenizer's ids
and decodes over varied Japanese strings (`tokenizer_reference.json`). Everything is seeded, so
a rerun reproduces the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    GPTSanJapaneseConfig,
    GPTSanJapaneseForConditionalGeneration,
    GPTSanJapaneseTokenizer,
)

HERE = Path(__file__).resolve().parent

# Two- and three-character words the scanner may pick (it looks at most three characters ahead
# unless the text starts with "<"); a few come after their first character, so the rule "the
# lowest id among the candidates wins" (not "the longest") decides between them.
EARLY_WORDS = [
    "こんにちは"[:3],
    "にちは",
    "です",
    "ます",
    "今日",
    "天気",
    "元気",
    "ありが",
    "とう",
    "ござい",
    "ました",
    "よろし",
    "くね",
    "お願い",
    "します",
    "ちょっ",
    "いい",
    "雨が",
]
CHARS = (
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
    "がぎぐげござじずぜぞだぢづでどばびぶべぼぱぴぷぺぽっゃゅょー"
    "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲン"
    "今日天気元雨晴明後朝夜私君何時間人本語話会社学校先生"
    "、。！？「」（）・…0123456789"
)
LATE_WORDS = ["今は", "何時", "日本", "本語", "話す", "会社員"]
VARIANTS = ["です,デス", "ござい,ゴザイ"]
MARKUP = ["<SP>", "<BR>", "<TAB>", "<BLOCK>", "<KIGOU>", "<U2000U2BFF>", "<URL>", "<EMAIL>"]
EMOJI = {"😀": "<|emoji1|>", "🍣": "<|emoji2|>", "❤️": "<|emoji3|>"}
SPECIALS = [
    "<|bagoftoken|>",
    "<|separator|>",
    "<|startoftext|>",
    "<|nottoken|>",
    "<|segmenter|>",
    "<|endoftext|>",
]


def vocabulary() -> list[str]:
    lines = [*EARLY_WORDS, *CHARS, *LATE_WORDS]
    lines = list(dict.fromkeys(lines))
    lines.remove("です")
    lines.remove("ござい")
    lines[3:3] = VARIANTS  # a variant line among the words
    lines += [",", *MARKUP, *EMOJI.values(), *(f"<|byte{i}|>" for i in range(256)), *SPECIALS]
    return lines


def write_tokenizer_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    emoji = {"emoji": EMOJI, "emoji_inv": {v: k for k, v in EMOJI.items()}}
    (folder / "emoji.json").write_text(json.dumps(emoji, ensure_ascii=False), encoding="utf-8")


TEXTS = [
    "",
    "こんにちは",
    "今日はいい天気ですね。",
    "今は何時ですか？",
    "日本語を話す会社員",
    "デス・ゴザイ",
    "半角 スペースと全角　スペース",
    "一行目\n二行目\r\n三行目\r四行目",
    "タブ\tの後",
    "ダッシュ—マイナス−長音ー",
    "寿司🍣が好き😀❤️",
    "知らない漢字：鬱、蘊",
    "ABC abc 123",
    "記号§と°と→と★",
    "罫線┃──┃と▀█",
    "<SP>と<BR>をそのまま書く",
    "前<|segmenter|>後",
    "あ <|segmenter|> い",  # spaces around a special token are kept
    "<|endoftext|> う",
    "終わり<|endoftext|>続き",
    "カンマ,区切り,",
    "<タグではない",
    "おはようございます！ありがとうございました。よろしくね。",
]
PREFIXES = [
    ("はい、元気です。", "こんにちは、元気ですか？"),
    ("雨が降るかも", "明日の天気は？"),
    ("", "後"),
]
# Ids whose decoding exercises byte runs, <|bagoftoken|>, markup and special tokens.
DECODE_CASES = [
    ["日", "<|bagoftoken|>"],
    ["<|byte227|>", "<|byte129|>", "<|byte130|>", "天", "<|byte227|>", "<|byte129|>"],
    ["<|startoftext|>", "今日", "<|segmenter|>", "<SP>", "<BR>", "<TAB>", "<|endoftext|>"],
    ["<BLOCK>", "<KIGOU>", "<U2000U2BFF>", "<|emoji2|>", "<URL>", "デス"],
    ["<|bagoftoken|>", "あ"],
    ["<|byte240|>", "<|byte159|>", "<|bagoftoken|>"],
]


def tokenizer_reference(tokenizer: GPTSanJapaneseTokenizer) -> dict:
    cases = []
    for text in TEXTS:
        encoded = tokenizer(text)
        cases.append(
            {
                "text": text,
                "input_ids": encoded["input_ids"],
                "token_type_ids": encoded["token_type_ids"],
                "decoded": tokenizer.decode(
                    encoded["input_ids"], clean_up_tokenization_spaces=False
                ),
            }
        )
    prefixed = []
    for text, prefix in PREFIXES:
        encoded = tokenizer(text, prefix_text=prefix)
        prefixed.append(
            {
                "text": text,
                "prefix_text": prefix,
                "input_ids": encoded["input_ids"],
                "token_type_ids": encoded["token_type_ids"],
            }
        )
    decodes = []
    for tokens in DECODE_CASES:
        ids = tokenizer.convert_tokens_to_ids(tokens)
        decodes.append(
            {
                "ids": ids,
                "decoded": tokenizer.decode(ids, clean_up_tokenization_spaces=False),
            }
        )
    return {"encode": cases, "prefixed": prefixed, "decode": decodes}


def randomise(model: GPTSanJapaneseForConditionalGeneration, seed: int) -> None:
    """Weights large enough that every part of the network moves the logits (the 4.x
    initialiser's factor 0.002 would make them nearly flat)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.dim() == 1 or name == "final_logits_bias":
                centre = 1.0 if name.endswith("norm.weight") else 0.0
                values = centre + 0.3 * torch.randn(tensor.shape, generator=generator)
            elif "embed" in name:
                values = torch.randn(tensor.shape, generator=generator)
            else:
                values = torch.randn(tensor.shape, generator=generator) / tensor.shape[-1] ** 0.5
            tensor.copy_(values)


def build_checkpoint(folder: Path, seed: int, *, ext: bool, spout: bool, fp16: bool) -> None:
    vocab_size = len(vocabulary())
    config = GPTSanJapaneseConfig(
        vocab_size=vocab_size,
        max_position_embeddings=48,
        d_model=32,
        d_ff=48,
        d_ext=40,
        d_spout=16 if spout else 0,
        num_switch_layers=2,
        num_ext_layers=1 if ext else 0,
        num_heads=4,
        num_experts=4,
        expert_capacity=4,  # small, so a ~12-token prompt overflows an expert
        separator_token_id=vocabulary().index("<|segmenter|>"),
        pad_token_id=vocabulary().index("<|separator|>"),
        eos_token_id=vocabulary().index("<|endoftext|>"),
        bos_token_id=vocabulary().index("<|startoftext|>"),
    )
    torch.manual_seed(seed)
    model = GPTSanJapaneseForConditionalGeneration(config).eval()
    randomise(model, seed)
    if fp16:
        model = model.half()
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=not spout)
    write_tokenizer_files(folder)


def logits_and_generation(folder: Path, tokenizer, spout_dim: int, seed: int) -> tuple[dict, list]:
    model = GPTSanJapaneseForConditionalGeneration.from_pretrained(
        folder, torch_dtype=torch.float32
    )
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    spout = torch.randn((1, spout_dim), generator=generator) if spout_dim else None
    cases = [
        ("no_prefix", tokenizer("こんにちは、元気ですか？"), True, False),
        ("prefix", tokenizer("はい、", prefix_text="今日はいい天気ですね。元気？"), True, False),
        ("causal", tokenizer("ありがとうございました。よろしくね"), False, False),
    ]
    if spout is not None:
        cases.append(("spout", tokenizer("お願いします。今日は雨が"), False, True))
    tensors, records = {}, []
    for name, encoded, typed, with_spout in cases:
        ids = torch.tensor([encoded["input_ids"]])
        kwargs = {"attention_mask": torch.ones_like(ids)}
        if typed:
            kwargs["token_type_ids"] = torch.tensor([encoded["token_type_ids"]])
        if with_spout:
            kwargs["spout"] = spout
        with torch.no_grad():
            logits = model(ids, **kwargs).logits[0]
            generated = model.generate(ids, max_new_tokens=8, do_sample=False, **kwargs)
        tensors[f"{folder.name}/{name}"] = logits.float().contiguous()
        records.append(
            {
                "checkpoint": folder.name,
                "case": name,
                "input_ids": encoded["input_ids"],
                "token_type_ids": encoded["token_type_ids"] if typed else None,
                "spout": spout[0].tolist() if with_spout else None,
                "generated": generated[0, ids.shape[1] :].tolist(),
            }
        )
    return tensors, records


def main() -> None:
    import transformers

    assert transformers.__version__ == "4.40.2", transformers.__version__
    write_tokenizer_files(HERE)
    tokenizer = GPTSanJapaneseTokenizer(str(HERE / "vocab.txt"), str(HERE / "emoji.json"))
    (HERE / "tokenizer_reference.json").write_text(
        json.dumps(tokenizer_reference(tokenizer), ensure_ascii=False, indent=1), encoding="utf-8"
    )
    build_checkpoint(HERE / "ext", 1, ext=True, spout=False, fp16=True)
    build_checkpoint(HERE / "spout", 2, ext=False, spout=True, fp16=False)
    tensors, records = {}, []
    for folder, spout_dim, seed in ((HERE / "ext", 0, 3), (HERE / "spout", 16, 4)):
        more_tensors, more_records = logits_and_generation(folder, tokenizer, spout_dim, seed)
        tensors.update(more_tensors)
        records += more_records
    save_file(tensors, HERE / "reference.safetensors")
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": records}
    (HERE / "reference.json").write_text(
        json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
