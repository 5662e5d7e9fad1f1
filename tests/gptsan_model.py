"""A tiny GPTSAN checkpoint in the hub layout, sized for chat (context 1,280 like the real one).

`config.json` (GPTSanJapaneseForConditionalGeneration), fp16 `model.safetensors`, and a
`vocab.txt` + `emoji.json` built from the demo corpus: its characters and frequent pairs, the
markup tokens, 256 byte tokens and the special tokens in the real vocabulary's order. Weights are
random; the logits bias keeps byte and special tokens (but `<|endoftext|>`) out of the replies,
so a reply is random Japanese characters that end now and then.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from bot.models.demo import demo_corpus_lines

SPECIALS = ["<|bagoftoken|>", "<|separator|>", "<|startoftext|>", "<|nottoken|>",
            "<|segmenter|>", "<|endoftext|>"]  # fmt: skip
MARKUP = ["<SP>", "<BR>", "<TAB>", "<BLOCK>", "<KIGOU>", "<U2000U2BFF>"]
EMOJI = {"😀": "<|emoji1|>", "☃️": "<|emoji2|>"}


def vocabulary() -> list[str]:
    lines = demo_corpus_lines()
    pairs = collections.Counter(line[i : i + 2] for line in lines for i in range(len(line) - 1))
    words = [pair for pair, count in pairs.most_common(300) if count > 2 and "," not in pair]
    characters = sorted({c for line in lines for c in line if c not in ", \u3000"})
    return [*words, *characters, ",", *MARKUP, *EMOJI.values(),
            *(f"<|byte{i}|>" for i in range(256)), *SPECIALS]  # fmt: skip


def build_gptsan_folder(folder: Path, *, seed: int = 0, context: int = 1280) -> Path:
    import torch
    from safetensors.torch import save_file

    from bot.models.gptsan.config import config_from_dict
    from bot.models.gptsan.modeling import GPTSanForGeneration

    vocab = vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "architectures": ["GPTSanJapaneseForConditionalGeneration"],
        "model_type": "gptsan-japanese",
        "vocab_size": len(vocab),
        "max_position_embeddings": context,
        "d_model": 64,
        "d_ff": 96,
        "d_ext": 96,
        "d_spout": 0,
        "num_switch_layers": 2,
        "num_ext_layers": 1,
        "num_heads": 4,
        "num_experts": 4,
        "expert_capacity": 64,
        "separator_token_id": vocab.index("<|segmenter|>"),
        "pad_token_id": vocab.index("<|separator|>"),
        "eos_token_id": vocab.index("<|endoftext|>"),
        "bos_token_id": vocab.index("<|startoftext|>"),
        "torch_dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(values, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = GPTSanForGeneration(config_from_dict(values))
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("norm.weight"):
            state[name] = torch.ones_like(tensor)
        elif tensor.dim() == 1:
            state[name] = torch.zeros_like(tensor)
        else:
            state[name] = torch.randn_like(tensor) / tensor.shape[-1] ** 0.5
    bias = torch.zeros((1, len(vocab)))
    first_byte = vocab.index("<|byte0|>")
    bias[0, first_byte:] = -30.0  # bytes and special tokens
    bias[0, vocab.index("<|endoftext|>")] = 2.0
    state["final_logits_bias"] = bias
    save_file(
        {k: v.half().contiguous() for k, v in state.items()}, str(folder / "model.safetensors")
    )
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    emoji = {"emoji": EMOJI, "emoji_inv": {v: k for k, v in EMOJI.items()}}
    (folder / "emoji.json").write_text(json.dumps(emoji, ensure_ascii=False), encoding="utf-8")
    return folder


if __name__ == "__main__":  # build one by hand: python -m tests.gptsan_model /tmp/gptsan-tiny
    import sys

    print(build_gptsan_folder(Path(sys.argv[1])))
