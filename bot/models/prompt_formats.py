"""Prompt formats: how a conversation is written for each kind of model.

rinna's instruction models read `ユーザー: …<NL>システム: …` with the literal `<NL>` for every
newline; LINE's read the same turns joined by real newlines; base models get the same transcript
as plain text to continue. User text is neutralised so it can never forge a turn or end the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

USER_LABEL = "ユーザー"
BOT_LABEL = "システム"

# Special tokens of the supported tokenizers, as text, and any `<|…|>` token whatever it says
# (abeja's `<|byte10|>` is a line break); the loaded tokenizer's declared tokens are added to
# these (see `neutralise`). A user typing one must not reach the model as that token: its angle
# brackets become 〈〉, which NFKC normalisation leaves alone (full-width ＜＞ would be folded
# back to <> by the tokenizer's normaliser).
_SPECIAL_TOKEN = re.compile(
    r"<(\s*/?\s*(?:s|nl|unk|pad|br|mask|cls|sep|\|[^<>|\s]{1,40}\|)\s*)>", re.I
)
# Look-alikes for the brackets of a declared token; NFKC leaves them alone (full-width ＜＞［］
# would be folded back by the tokenizer's normaliser).
_DEFUSED_BRACKETS = str.maketrans({"<": "〈", ">": "〉", "[": "〔", "]": "〕"})
# Characters with no glyph: format characters (zero-width space, joiners, direction marks,
# BOM, soft hyphen), the other default-ignorable code points, U+FFFD (what a broken byte
# became) and lone surrogates. Tokenizers read them as a space or as nothing, so one between
# a role label and its colon would forge a turn.
_IGNORABLE = frozenset(
    [
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, 0xFFFD),
        *range(0x180B, 0x1810),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    ]
)
# Kept inside an emoji sequence: the joiner, variation selectors and tag characters (👨‍👩‍👧,
# ❤️, 🏴 flags) after an emoji, a keycap digit or another of them. After a label's last
# character (katakana) they are never kept.
_EMOJI_GLUE = frozenset([0x200D, 0xFE0E, 0xFE0F, *range(0xE0020, 0xE0080)])
# sentencepiece's whitespace symbol; its tokenizers read it as a space.
_SPACE_SYMBOL = "\u2581"


def _char_class(codes: Iterable[int]) -> re.Pattern[str]:
    """One character class for `codes`, written as ranges (one item per code is slow to match)."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]")


# Format (Cf) and space (Zs) characters live in these planes. Scanned once, so that text
# without any of them (nearly all) passes with one regex search.
_BY_CATEGORY: dict[str, set[int]] = {"Cf": set(), "Zs": set()}
for _code in (*range(0x20000), *range(0xE0000, 0xE1000)):
    _category = unicodedata.category(chr(_code))
    if _category in _BY_CATEGORY:
        _BY_CATEGORY[_category].add(_code)
_MAYBE_INVISIBLE = _char_class(
    _BY_CATEGORY["Cf"] | _IGNORABLE | _EMOJI_GLUE | set(range(0xD800, 0xE000))
)
_SPACES = _char_class(_BY_CATEGORY["Zs"] | {ord(_SPACE_SYMBOL)})
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


def strip_invisible(text: str) -> str:
    """Remove characters nobody can see (format characters, default-ignorables, U+FFFD, lone
    surrogates), keeping the joiners and selectors inside emoji sequences.

    Applied to incoming messages before they are stored (a message of such characters alone is
    empty) and again, after NFKC, to every text put into a prompt."""
    if not _MAYBE_INVISIBLE.search(text):
        return text
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        category = unicodedata.category(ch)
        if code in _EMOJI_GLUE:
            if out and _glues_to(out[-1]):
                out.append(ch)
        elif category not in ("Cf", "Cs") and code not in _IGNORABLE:
            out.append(ch)
    return "".join(out)


def _glues_to(previous: str) -> bool:
    return (
        ord(previous) in _EMOJI_GLUE
        or unicodedata.category(previous) in ("So", "Sk")
        or previous in "0123456789#*"
    )


def _fold_spaces(text: str) -> str:
    """Every space character (Zs) and sentencepiece's `▁` become a plain space: what the
    tokenizers read them as, and what the role-label pattern expects."""
    return _SPACES.sub(" ", text)


def neutralise(text: str, special_tokens: Collection[str] = ()) -> str:
    """Make user-written text safe to embed inside a turn.

    NFKC first, as the tokenizers do, so half-width or full-width look-alikes of a turn marker
    are caught too; invisible characters are removed and spaces folded, so none can hide
    between a label and its colon; then special tokens (`special_tokens`: the ones the loaded
    tokenizer declares, in any letter case, besides the usual ones) and role labels are
    defused."""
    text = unicodedata.normalize("NFKC", clean_control_chars(text))
    text = _fold_spaces(strip_invisible(text))
    declared = _declared_pattern(frozenset(special_tokens))
    if declared is not None:
        text = declared.sub(lambda m: m.group(0).translate(_DEFUSED_BRACKETS), text)
    text = _SPECIAL_TOKEN.sub(lambda m: f"〈{m.group(1)}〉", text)
    text = _SECTION_HEADER.sub(r"\1「\2」\3", text)
    return _ROLE_LABEL.sub(r"「\1」\2", text)


@lru_cache(maxsize=16)
def _declared_pattern(tokens: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern for the declared tokens that a bracket swap can defuse, longest first."""
    markup = sorted((t for t in tokens if t[:1] in "<[" and len(t) > 1), key=len, reverse=True)
    if not markup:
        return None
    return re.compile("|".join(re.escape(t) for t in markup), re.I)


def neutralise_name(name: str, special_tokens: Collection[str] = ()) -> str:
    """Display names become a short single-line label that cannot pose as a role or a token."""
    name = neutralise(name, special_tokens).replace("\n", " ").replace(":", "").strip()
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

    def _text(self, text: str, special_tokens: Collection[str] = ()) -> str:
        return neutralise(text, special_tokens).replace("\n", self.newline)

    def render_turns(
        self, turns: Sequence[Turn], special_tokens: Collection[str] = ()
    ) -> list[str]:
        """One string per rendered turn. Consecutive user messages merge into one user turn, one
        line each; when more than one person speaks, each line starts with the speaker's name.
        `special_tokens`: the loaded tokenizer's, defused in every text (see `neutralise`)."""
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
                body = self._text(turn.text, special_tokens)
                name = neutralise_name(turn.author_name, special_tokens)
                pending.append(f"{name}: {body}" if show_names else body)
            else:
                flush()
                rendered.append(f"{BOT_LABEL}: {self._text(turn.text, special_tokens)}")
        flush()
        return rendered

    def render(
        self, turns: Sequence[Turn], preamble: str = "", special_tokens: Collection[str] = ()
    ) -> str:
        """The whole prompt: optional preamble, the turns, and the open reply marker."""
        parts = [self._text(preamble, special_tokens)] if preamble.strip() else []
        parts += self.render_turns(turns, special_tokens)
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

    def render(
        self, turns: Sequence[Turn], preamble: str = "", special_tokens: Collection[str] = ()
    ) -> str:
        if len(turns) == 1 and turns[0].role == "user":
            body = self._text(turns[0].text, special_tokens)
        else:
            body = self.newline.join(self.render_turns(turns, special_tokens))
        head = f"{self._text(preamble, special_tokens)}<NL><NL>" if preamble.strip() else ""
        return f"{head}### 指示:<NL>{body}<NL><NL>{self.reply_marker}"


class GPTSanFormat(PromptFormat):
    """GPTSAN's prefix-LM input: `<|startoftext|>`, the conversation as the prefix (read both
    ways), `<|segmenter|>`, then the reply. The prefix ends with the reply's label so the model
    knows whose turn it is; the tokenizer turns the real newlines into its `<BR>`."""

    @property
    def reply_marker(self) -> str:
        return f"{BOT_LABEL}:<|segmenter|>"

    def render(
        self, turns: Sequence[Turn], preamble: str = "", special_tokens: Collection[str] = ()
    ) -> str:
        return "<|startoftext|>" + super().render(turns, preamble, special_tokens)


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
