"""Named models: everything the bot needs to know to load each one the way its card says.

Admins pick a model by its short name (`/model rinna-3.6b-ppo`) or by hub id; any other hub id
or local path also works, with the prompt format given or detected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.models.prompt_formats import FORMATS
from bot.models.sampling import SamplingParams


@dataclass(frozen=True)
class ModelEntry:
    name: str
    hub_id: str
    family: str  # the transformers class
    tokenizer: str  # sentencepiece | bpe | gpt-neox-japanese | gptsan
    parameters_b: float
    context_length: int
    prompt_format: str  # rinna | line | plain | gptsan
    sampling: SamplingParams
    special_ids: dict[str, int] = field(default_factory=dict)
    notes: str = ""
    lower_case: bool = False  # trained on lower-cased text (its vocabulary has no capitals)
    quantizable: bool = True  # bitsandbytes 8-bit/4-bit; False where the loader refuses it

    def memory_gib(self, precision: str) -> float:
        """Weights alone, plus ~20 % for activations and a short KV cache."""
        bytes_per_parameter = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "8bit": 1.0, "4bit": 0.5}
        return self.parameters_b * 1e9 * bytes_per_parameter[precision] * 1.2 / 2**30


_RINNA_IDS = {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
_RINNA_CHAT = SamplingParams(temperature=0.7, repetition_penalty=1.1)
_LINE = SamplingParams(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.1)
_CALM = SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.05)
_ABEJA = SamplingParams(temperature=1.0, top_p=0.95, top_k=50)
_BASE = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.05)
_GPTSAN = SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1)

CATALOGUE: tuple[ModelEntry, ...] = (
    ModelEntry(
        "rinna-3.6b",
        "rinna/japanese-gpt-neox-3.6b",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        3.6,
        2048,
        "plain",
        SamplingParams(temperature=0.8),
        _RINNA_IDS,
    ),
    ModelEntry(
        "rinna-3.6b-sft",
        "rinna/japanese-gpt-neox-3.6b-instruction-sft",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        3.6,
        2048,
        "rinna",
        SamplingParams(temperature=0.7),
        _RINNA_IDS,
    ),
    ModelEntry(
        "rinna-3.6b-sft-v2",
        "rinna/japanese-gpt-neox-3.6b-instruction-sft-v2",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        3.6,
        2048,
        "rinna",
        _RINNA_CHAT,
        _RINNA_IDS,
    ),
    ModelEntry(
        "rinna-3.6b-ppo",
        "rinna/japanese-gpt-neox-3.6b-instruction-ppo",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        3.6,
        2048,
        "rinna",
        _RINNA_CHAT,
        _RINNA_IDS,
        "repeats itself more than SFT; post-processing collapses loops",
    ),
    ModelEntry(
        "rinna-gpt2-xsmall",
        "rinna/japanese-gpt2-xsmall",
        "GPT2LMHeadModel",
        "sentencepiece",
        0.037,
        1024,
        "plain",
        _BASE,
        {"unk": 0, "bos": 1, "eos": 2, "pad": 3},
        "lower-cases its input",
    ),
    ModelEntry(
        "open-calm-1b",
        "cyberagent/open-calm-1b",
        "GPTNeoXForCausalLM",
        "bpe",
        1.4,
        2048,
        "plain",
        _CALM,
        {"bos": 0, "eos": 0, "pad": 1},
    ),
    ModelEntry(
        "open-calm-3b",
        "cyberagent/open-calm-3b",
        "GPTNeoXForCausalLM",
        "bpe",
        2.7,
        2048,
        "plain",
        _CALM,
        {"bos": 0, "eos": 0, "pad": 1},
    ),
    ModelEntry(
        "open-calm-7b",
        "cyberagent/open-calm-7b",
        "GPTNeoXForCausalLM",
        "bpe",
        6.8,
        2048,
        "plain",
        _CALM,
        {"bos": 0, "eos": 0, "pad": 1},
    ),
    ModelEntry(
        "line-1.7b-sft",
        "line-corporation/japanese-large-lm-1.7b-instruction-sft",
        "GPT2LMHeadModel",
        "sentencepiece",
        1.7,
        2048,
        "line",
        _LINE,
        {"unk": 0, "bos": 1, "eos": 2, "pad": 3},
    ),
    ModelEntry(
        "line-3.6b-sft",
        "line-corporation/japanese-large-lm-3.6b-instruction-sft",
        "GPTNeoXForCausalLM",
        "sentencepiece",
        3.6,
        2048,
        "line",
        _LINE,
        {"bos": 2, "eos": 2, "pad": 2},
    ),
    ModelEntry(
        "abeja-neox-2.7b",
        "abeja/gpt-neox-japanese-2.7b",
        "GPTNeoXJapaneseForCausalLM",
        "gpt-neox-japanese",
        2.7,
        2048,
        "plain",
        _ABEJA,
        {"bos": 31999, "eos": 31999},
        "writes newlines as <BR>",
    ),
    ModelEntry(
        "abeja-gpt2-large",
        "abeja/gpt2-large-japanese",
        "GPT2LMHeadModel",
        "sentencepiece",
        0.76,
        1024,
        "plain",
        _ABEJA,
        {"pad": 3},
    ),
    ModelEntry(
        "yellowback-neo-1.3b",
        "yellowback/gpt-neo-japanese-1.3B",
        "GPTNeoForCausalLM",
        "bpe",
        1.3,
        2048,
        "plain",
        _BASE,
    ),
    ModelEntry(
        "gptsan",
        "Tanrei/GPTSAN-japanese",
        "GPTSanJapaneseForConditionalGeneration",  # the project's own code (bot/models/gptsan)
        "gptsan",
        2.8,
        1280,
        "gptsan",
        _GPTSAN,
        {"pad": 35995, "eos": 35999},  # config.json defaults of transformers 4.x
        "Switch Transformer prefix-LM; no 8-bit/4-bit, no LoRA personas",
        quantizable=False,
    ),
)

_BY_KEY = {key: e for e in CATALOGUE for key in (e.name, e.hub_id)}


def find_entry(spec: str) -> ModelEntry | None:
    """The catalogue entry for a short name or hub id, if there is one."""
    return _BY_KEY.get(spec.strip())


def model_names() -> list[str]:
    return ["demo", *(e.name for e in CATALOGUE)]


def format_catalogue() -> str:
    """The table `python -m bot models` prints."""
    header = (
        f"{'name':<20} {'hub id':<56} {'params':>7} {'format':<6} "
        f"{'fp32':>7} {'fp16':>7} {'8-bit':>7} {'4-bit':>7}"
    )
    lines = [header, "-" * len(header)]
    lines.append(
        f"{'demo':<20} {'(built offline, random weights)':<56} {'0.3M':>7} "
        f"{'rinna':<6} {'<0.01':>7} {'-':>7} {'-':>7} {'-':>7}"
    )
    for e in CATALOGUE:
        memory = [_gib(e.memory_gib(p)) for p in ("fp32", "fp16")]
        memory += [_gib(e.memory_gib(p)) if e.quantizable else "-" for p in ("8bit", "4bit")]
        size = f"{e.parameters_b:.1f}B" if e.parameters_b >= 0.1 else f"{e.parameters_b * 1e3:.0f}M"
        lines.append(
            f"{e.name:<20} {e.hub_id:<56} {size:>7} {e.prompt_format:<6} "
            + " ".join(f"{m:>7}" for m in memory)
        )
    lines.append("")
    lines.append("Memory is an estimate: weights plus ~20 % for activations and a short KV cache.")
    lines.append(
        "Any other hub id or local folder also works "
        f"(PROMPT_FORMAT={'|'.join(['auto', *FORMATS])})."
    )
    lines.append(
        "GPTSAN runs on the project's own GPTSAN code (transformers 5 dropped it); 8-bit/4-bit "
        "and LoRA personas are not available for it."
    )
    return "\n".join(lines)


def _gib(value: float) -> str:
    return f"{value:.1f}G" if value >= 0.1 else f"{value * 1024:.0f}M"
