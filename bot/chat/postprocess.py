"""Turn a model's raw continuation into the text a person reads. Pure functions only."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache

from bot.models.prompt_formats import clean_control_chars

FALLBACK_REPLY = "（うまく返事ができませんでした。言い方を変えてもう一度送ってください。）"

_SPECIAL_TOKENS = re.compile(
    r"</s>|<s>|<pad>|<unk>|<mask>|<\|[a-z_]+\|>|\[(?:PAD|CLS|SEP|MASK|UNK)\]", re.I
)
_NEWLINE_TOKENS = re.compile(r"<NL>|<BR>", re.I)
# abeja's tokenizer writes spaces and tabs as tokens too; its decoder spells them out, but a
# model can also write them piece by piece.
_SPACE_TOKENS = re.compile(r"<SP>|<TAB>", re.I)
# Tag-shaped leftovers the model invents (`‹回答者>`, `</回答>`, `<|im_end|>`): an ASCII or
# single-guillemet angle bracket around one short word. Mentions (`<@1>`, `<#1>`), custom emoji
# (`<:a:1>`), links (`<https://…>`) and full-width ＜お知らせ＞ headings do not match.
# Code is left alone: inside backticks, and after an ASCII word (`vector<int>`, `List<T>`).
_TAG_SHAPED = re.compile(r"(?<![A-Za-z0-9_])[<‹][/|]?[^\W_][\w|.\-]{0,30}[>›]")
_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.S)
# While streaming, an opening bracket and a word with no closing bracket yet may be a tag.
_OPEN_TAG_TAIL = re.compile(r"[<‹][/|]?[\w|.\-]{0,30}$")
# Once the reply's own label is gone, a role label anywhere else starts an invented turn.
_BARE_LABELS = ("ユーザー:", "ユーザー：", "システム:", "システム：")
_LEADING_LABEL = re.compile(r"^\s*(?:システム|assistant)\s*[:：]\s*", re.I)
# A sentence ends with one of these (plus any closing brackets or emoji after it) or a newline.
_SENTENCE = re.compile(r".*?(?:[。．！？!?]+[」』）)\]]*|\n|$)", re.S)
_SENTENCE_END = re.compile(r"(?:[。．！？!?]+[」』）)\]]*|\n)")
# A short unit repeated four or more times in a row ("ありがとうありがとうありがとう...").
_RUN_OF_UNIT = re.compile(r"(.{2,30}?)\1{3,}", re.S)
# A sentence of at least this many letters or digits that comes back later in the reply is a
# loop, not emphasis; shorter ones (はい。 なるほど。 ありがとう！) are left to come back.
MIN_REPEATED_SENTENCE_LETTERS = 6


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """Keep what comes before the first invented next turn or end-of-text token."""
    cut = len(text)
    for stop in (*stop_strings, "</s>", "<|endoftext|>"):
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def strip_partial_stop(text: str, stop_strings: Sequence[str]) -> str:
    """While streaming, hide a trailing fragment that may be the start of a stop string."""
    for stop in (*stop_strings, "</s>", "<NL>"):
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                return text[: len(text) - size]
    return text


def split_sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.findall(text) if s]


def collapse_repetition(text: str) -> str:
    """Collapse loops: a sentence (or a cycle of up to three sentences) repeated back to back
    keeps one occurrence; a sentence of six or more letters that comes back after others keeps
    its first occurrence; a short unit repeated four or more times keeps one."""
    sentences = split_sentences(text)
    out: list[str] = []
    for sentence in sentences:
        out.append(sentence)
        for period in (1, 2, 3):
            if len(out) >= 2 * period and _same(out[-period:], out[-2 * period : -period]):
                del out[-period:]
                break
    text = "".join(_drop_later_repeats(out))
    return _RUN_OF_UNIT.sub(_collapse_unit, text)


def _drop_later_repeats(sentences: list[str]) -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for sentence in sentences:
        core = _core(sentence)
        if sum(c.isalnum() for c in core) >= MIN_REPEATED_SENTENCE_LETTERS:
            if core in seen:
                continue
            seen.add(core)
        kept.append(sentence)
    return kept


def _core(sentence: str) -> str:
    """A sentence without its surrounding spaces and end punctuation: 「…です。」 and 「…です！」
    are the same sentence said twice."""
    return sentence.strip().rstrip("。．！？!?」』）)]…").strip()


def _collapse_unit(match: re.Match[str]) -> str:
    unit = match.group(1)
    # Numbers ("1000000", user ids) and one repeated character ("ははは", "ーーー") are not loops.
    if len(set(unit)) == 1 or all(c.isdigit() or not c.isalnum() for c in unit):
        return match.group(0)
    return unit


def _same(a: list[str], b: list[str]) -> bool:
    return [s.strip() for s in a] == [s.strip() for s in b] and any(s.strip() for s in a)


def trim_to_sentence(text: str) -> str:
    """For a reply cut off by the token limit: drop the unfinished tail after the last complete
    sentence, when there is one."""
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()]


def clean_reply(
    raw: str,
    stop_strings: Sequence[str],
    *,
    hit_token_limit: bool = False,
    special_tokens: Collection[str] = (),
) -> str:
    """The whole post-processing: the final text shown to users. Never empty.

    `special_tokens`: what the loaded tokenizer declares (see `Tokenizer.special_tokens`); any
    of them left in the text is removed."""
    text = clean_partial(raw, stop_strings, streaming=False, special_tokens=special_tokens)
    if hit_token_limit:
        text = trim_to_sentence(text).strip()
    return text or FALLBACK_REPLY


def clean_partial(
    raw: str,
    stop_strings: Sequence[str],
    *,
    streaming: bool = True,
    special_tokens: Collection[str] = (),
) -> str:
    """Post-process text generated so far. While streaming, a possible half-written stop string
    or tag at the end is held back so it never flashes on screen."""
    text = cut_at_stop(clean_control_chars(raw), stop_strings)
    if streaming:
        text = _OPEN_TAG_TAIL.sub("", strip_partial_stop(text, stop_strings))
    text = _NEWLINE_TOKENS.sub("\n", text)
    text = _SPACE_TOKENS.sub(" ", text)
    text = remove_special_tokens(text, special_tokens)
    text = _SPECIAL_TOKENS.sub("", text).replace("\ufffd", "")
    text = _outside_code(lambda part: _TAG_SHAPED.sub("", part), text)
    text = _LEADING_LABEL.sub("", text)
    text = cut_at_stop(text, _BARE_LABELS)
    text = collapse_repetition(text)
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _outside_code(change: Callable[[str], str], text: str) -> str:
    parts, start = [], 0
    for code in _CODE.finditer(text):
        parts += [change(text[start : code.start()]), code.group(0)]
        start = code.end()
    return "".join([*parts, change(text[start:])])


def remove_special_tokens(text: str, special_tokens: Collection[str]) -> str:
    """Remove every token of `special_tokens` written out in `text` (abeja's `<URL>`, `<DATE>`,
    `<KIGOU>`; byte and control tokens), longest first."""
    pattern = _token_pattern(frozenset(t for t in special_tokens if t.strip()))
    return pattern.sub("", text) if pattern is not None else text


@lru_cache(maxsize=16)
def _token_pattern(tokens: frozenset[str]) -> re.Pattern[str] | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))
