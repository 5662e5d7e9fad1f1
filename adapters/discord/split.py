"""Splitting a reply into Discord messages. Pure functions only."""

from __future__ import annotations

import re

MESSAGE_LIMIT = 2000  # Discord's limit on a message's content, in characters

# A sentence ends with full-width 。．！？ anywhere, or with ASCII .!? followed by whitespace or a
# non-ASCII character (post-processing turns ！ into !, so "すごい!本当" is common; "3.14" and
# "example.com" are not sentence ends). Closing brackets and quotes stay with their sentence.
_SENTENCE_END = re.compile(r"(?:[。．！？]+|[.!?]+(?=\s|[^\x00-\x7f]|$))[」』）)\]】〕》\"'”’]*")
# Where a sentence-less run can still be cut without breaking a word.
_SOFT_BREAK = re.compile(r"[ \u3000、，,]+")
# A code fence opens or closes a block only at the start of a line (Markdown rules).
_FENCE = re.compile(r"^[ \t]*```", re.M)
_CLOSE = "```"


def split_reply(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into messages of at most `limit` characters.

    Cuts after a sentence end (。！？ and the like) or a line break, whichever lets the message
    run longest, and never inside a ``` code block. Only a code block that is itself longer than
    a message is cut, at a line break inside it, and closed and reopened (with its language tag)
    around the cut so both halves still render as code. Returns [] for blank text.
    """
    if limit < 8:
        raise ValueError("limit is too small to hold a code fence and some text")
    chunks: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        spans = _code_spans(rest)
        cut = _last_break(rest, limit, spans, _SENTENCE_END, also_newlines=True)
        if cut is None and spans and spans[0][0] == 0 < limit < spans[0][1]:
            head, rest = _cut_code_block(rest, limit)
        else:
            if cut is None:
                cut = _last_break(rest, limit, spans, _SOFT_BREAK) or limit
            head, rest = rest[:cut].rstrip(), rest[cut:].lstrip()
        if head:
            chunks.append(head)
    if rest:
        chunks.append(rest)
    return chunks


def _code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each fenced block, end just past the closing fence's line; a fence left
    open (a reply cut off by the token limit) runs to the end of the text."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for fence in _FENCE.finditer(text):
        if start is None:
            start = fence.start()
            continue
        line_end = text.find("\n", fence.end())
        spans.append((start, len(text) if line_end == -1 else line_end + 1))
        start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _last_break(
    text: str,
    limit: int,
    spans: list[tuple[int, int]],
    pattern: re.Pattern[str],
    *,
    also_newlines: bool = False,
) -> int | None:
    """The largest cut position in (0, limit] that follows a `pattern` match (or a newline)
    and does not fall inside a code block."""
    window = text[: limit + 8]  # a little beyond, so a lookahead at `limit` sees what follows
    ends = [m.end() for m in pattern.finditer(window)]
    if also_newlines:
        ends += [i + 1 for i, char in enumerate(window) if char == "\n"]
    best = None
    for end in ends:
        if 0 < end <= limit and not any(s < end < e for s, e in spans):
            best = end if best is None else max(best, end)
    return best


def _cut_code_block(text: str, limit: int) -> tuple[str, str]:
    """`text` starts with a code block longer than `limit`: cut it at its last line break that
    fits, close the fence there and reopen it at the start of the rest."""
    header_end = text.find("\n") + 1  # "```python\n"
    header = text[:header_end]
    if header_end == 0 or header_end > limit // 2:  # no usable fence line: cut as prose
        return text[:limit], text[limit:]
    newline = text.rfind("\n", header_end, limit - len(_CLOSE))
    if newline == -1:  # one code line longer than a message
        room = limit - len(_CLOSE) - 1
        return text[:room] + "\n" + _CLOSE, header + text[room:]
    return text[: newline + 1] + _CLOSE, header + text[newline + 1 :]
