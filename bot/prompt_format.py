"""Prompt formats: how a conversation is written for each kind of model.

rinna's instruction models read `ユーザー: …<NL>システム: …` with the literal `<NL>` for every
newline; LINE's read the same turns joined by real newlines; base models get the same transcript
as plain text to continue. User text is neutralised so it can never forge a turn or end the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

USER_LABEL = "ユーザー"
BOT_LABEL = "システム"

# Special tokens of the supported tokenizers, as text. A user typing one must not reach the model
# as that token: its angle brackets become 〈〉, which NFKC normalisation leaves alone (full-width
# ＜＞ would be folded back to <> by the tokenizer's normaliser).
_SPECIAL_TOKEN = re.compile(r"<(\s*/?\s*(?:s|nl|unk|pad|br|mask|cls|sep|\|[a-z_]+\|)\s*)>", re.I)
# A role label followed by a colon ("システム:", "ユーザー：") reads as a turn marker, at the
# start of a line most of all; it is defused wherever it appears.
_ROLE_LABEL = re.compile(rf"({USER_LABEL}|{BOT_LABEL})(\s*:)")
# The instruct template's section headers ("### 指示:", "### 回答:") likewise.
_SECTION_HEADER = re.compile(r"(#+\s*)(指示|回答)(\s*:)")
_LINE_BREAKS = re.compile(r"\r\n|[\r\u0085\u2028\u2029\v\f]")


def clean_control_chars(text: str) -> str:
    """Normalise line breaks, turn tabs into spaces and drop other control characters.

    Applied to incoming messages before they are stored: control characters carry no meaning in
    a chat and some (NUL) break terminals and tokenizers."""
    text = _LINE_BREAKS.sub("\n", text).replace("\t", " ")
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")


def neutralise(text: str) -> str:
    """Make user-written text safe to embed inside a turn.

    NFKC first, as the tokenizers do, so half-width or full-width look-alikes of a turn marker
    are caught too; then special tokens and role labels are defused."""
    text = unicodedata.normalize("NFKC", clean_control_chars(text))
    text = _SPECIAL_TOKEN.sub(lambda m: f"〈{m.group(1)}〉", text)
    text = _SECTION_HEADER.sub(r"\1「\2」\3", text)
    return _ROLE_LABEL.sub(r"「\1」\2", text)


def neutralise_name(name: str) -> str:
    """Display names become a short single-line label that cannot pose as a role or a token."""
    name = neutralise(name).replace("\n", " ").replace(":", "").strip()
    name = re.sub(r"\s+", " ", name)[:32].strip()
    if not name:
        return "誰か"
    if name.strip("「」") in (USER_LABEL, BOT_LABEL):
        return f"{name.strip('「」')}さん"
    return name


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    text: str
    author_name: str = ""


@dataclass(frozen=True)
class PromptFormat:
    """A turn-based transcript format. `newline` is how a line break is written for the model."""

    name: str
    newline: str
    description: str

    @property
    def reply_marker(self) -> str:
        return f"{BOT_LABEL}: "

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Text that means the model has finished its turn and is inventing the next one."""
        markers = []
        for label in (USER_LABEL, BOT_LABEL):
            markers += [f"{self.newline}{label}:", f"{self.newline}{label}："]
        if self.newline != "\n":
            markers += [f"\n{USER_LABEL}:", f"\n{BOT_LABEL}:"]
        return tuple(markers)

    def _text(self, text: str) -> str:
        return neutralise(text).replace("\n", self.newline)

    def render_turns(self, turns: Sequence[Turn]) -> list[str]:
        """One string per rendered turn. Consecutive user messages merge into one user turn, one
        line each; when more than one person speaks, each line starts with the speaker's name."""
        names = {t.author_name for t in turns if t.role == "user"}
        show_names = len(names) > 1
        rendered: list[str] = []
        pending: list[str] = []

        def flush() -> None:
            if pending:
                rendered.append(f"{USER_LABEL}: " + self.newline.join(pending))
                pending.clear()

        for turn in turns:
            if turn.role == "user":
                body = self._text(turn.text)
                pending.append(
                    f"{neutralise_name(turn.author_name)}: {body}" if show_names else body
                )
            else:
                flush()
                rendered.append(f"{BOT_LABEL}: {self._text(turn.text)}")
        flush()
        return rendered

    def render(self, turns: Sequence[Turn], preamble: str = "") -> str:
        """The whole prompt: optional preamble, the turns, and the open reply marker."""
        parts = [self._text(preamble)] if preamble.strip() else []
        parts += self.render_turns(turns)
        parts.append(self.reply_marker)
        return self.newline.join(parts)


class InstructFormat(PromptFormat):
    """The `### 指示:<NL>{input}<NL><NL>### 回答:<NL>` template of public rinna LoRA recipes.
    `{input}` is the user's text for a single message, else the rinna-style transcript."""

    @property
    def reply_marker(self) -> str:
        return "### 回答:<NL>"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ("<NL>###", "\n###", *RINNA.stop_strings)

    def render(self, turns: Sequence[Turn], preamble: str = "") -> str:
        if len(turns) == 1 and turns[0].role == "user":
            body = self._text(turns[0].text)
        else:
            body = self.newline.join(self.render_turns(turns))
        head = f"{self._text(preamble)}<NL><NL>" if preamble.strip() else ""
        return f"{head}### 指示:<NL>{body}<NL><NL>{self.reply_marker}"


class GPTSanFormat(PromptFormat):
    """GPTSAN's prefix-LM input: `<|startoftext|>`, the conversation as the prefix (read both
    ways), `<|segmenter|>`, then the reply. The prefix ends with the reply's label so the model
    knows whose turn it is; the tokenizer turns the real newlines into its `<BR>`."""

    @property
    def reply_marker(self) -> str:
        return f"{BOT_LABEL}:<|segmenter|>"

    def render(self, turns: Sequence[Turn], preamble: str = "") -> str:
        return "<|startoftext|>" + super().render(turns, preamble)


RINNA = PromptFormat("rinna", "<NL>", "rinna instruction: ユーザー: …<NL>システム: …")
LINE = PromptFormat("line", "\n", "LINE instruction: ユーザー: …\\nシステム: …")
PLAIN = PromptFormat("plain", "\n", "plain continuation of a transcript, for base models")
PLAIN_NL = PromptFormat("plain", "<NL>", "plain continuation written with <NL> newlines")

GPTSAN = GPTSanFormat("gptsan", "\n", "GPTSAN prefix-LM: ユーザー: …\\nシステム:<|segmenter|>")

INSTRUCT = InstructFormat("instruct", "<NL>", "### 指示: / ### 回答: (public rinna LoRA recipes)")

FORMATS: dict[str, PromptFormat] = {"rinna": RINNA, "line": LINE, "plain": PLAIN, "gptsan": GPTSAN}
# Formats a persona (with its adapter) may ask for, beyond the model's own.
PERSONA_FORMATS: dict[str, PromptFormat] = {**FORMATS, "instruct": INSTRUCT}


def detect_format(model_name: str, has_nl_piece: bool) -> PromptFormat:
    """Pick the format a model was trained on from its name and tokenizer."""
    lowered = model_name.lower()
    if "gptsan" in lowered:
        return GPTSAN
    if "instruction" in lowered and "rinna" in lowered:
        return RINNA
    if "instruction" in lowered and (
        "line-corporation" in lowered or "japanese-large-lm" in lowered
    ):
        return LINE
    return PLAIN_NL if has_nl_piece else PLAIN


@dataclass(frozen=True)
class BuiltPrompt:
    text: str
    token_ids: list[int]
    turns_used: int


def build_prompt(
    fmt: PromptFormat,
    turns: Sequence[Turn],
    *,
    encode: Callable[[str], list[int]],
    budget: int,
    preamble: str = "",
) -> BuiltPrompt | None:
    """Fit as many of the most recent turns as the token budget allows, never cutting one.

    Returns None when not even the newest turn fits. Each turn is counted on its own first (cheap
    and close), then the joined prompt is counted exactly and older turns dropped until it fits.
    """
    if not turns:
        return None
    fixed = len(encode(fmt.render([], preamble)))
    used, count = fixed, 0
    for turn in reversed(turns):
        cost = len(encode(fmt.render_turns([turn])[0])) + 1
        if used + cost > budget:
            break
        used, count = used + cost, count + 1
    count = max(count, 1)
    while count >= 1:
        window = turns[len(turns) - count :]
        text = fmt.render(window, preamble)
        ids = encode(text)
        if len(ids) <= budget:
            return BuiltPrompt(text, ids, count)
        count -= 1
    return None
