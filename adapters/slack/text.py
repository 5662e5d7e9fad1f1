"""Text going to and coming from Slack. Pure functions only.

Outgoing: model output is escaped for mrkdwn (`&`, `<`, `>`), so it can never form `<!channel>`,
`<!here>` or `<@U…>` mentions, then split into messages that fit Slack's limit, counted in UTF-8
bytes of the escaped text.

Incoming: Slack's markup (`<@U…>`, `<#C…|name>`, `<https://…|label>`, `&amp;`) becomes the plain
text a person typed; the bot's own mention is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

# Slack has asked apps to keep `text` under 4,000 (and has answered `msg_too_long` near 4,000
# bytes of Japanese), and a Block Kit section holds 3,000 characters. 3,000 bytes of escaped
# text is under both whether Slack counts characters or bytes (bytes >= characters), and leaves
# room for the streaming marker. Japanese is 3 bytes a character: about 1,000 characters.
TEXT_LIMIT_BYTES = 3000
MIN_LIMIT_BYTES = 32  # below this a re-fenced code block piece cannot hold a character

_FENCE = "```"
_CODE_BLOCK = re.compile(r"```.*?```|```.*\Z", re.S)  # an unclosed block runs to the end
# A prose unit ends after a sentence end (plus closing brackets) or a line break.
_PROSE_UNIT = re.compile(r".*?(?:[。．！？!?]+[」』）)\]]*|\n|\Z)", re.S)
_SOFT_BREAKS = "、，, 　"
_LANGUAGE_TAG = re.compile(r"```[\w+#.-]{0,20}")  # "```python": a fence line holding no code
_MARKUP = re.compile(r"<([^<>\n]*)>")
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^<>]*)?>")


def escape_mrkdwn(text: str) -> str:
    """The three characters Slack treats as control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escaped_size(text: str) -> int:
    """Bytes `text` takes in a message once escaped."""
    return len(escape_mrkdwn(text).encode("utf-8"))


def render_messages(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    """`text` as escaped message texts, each at most `limit` UTF-8 bytes."""
    return [escape_mrkdwn(piece) for piece in split_message(text, limit)]


def split_message(text: str, limit: int = TEXT_LIMIT_BYTES) -> list[str]:
    """Split `text` into pieces whose escaped UTF-8 size is at most `limit` bytes.

    Pieces end at sentence ends (。！？) or line breaks; a ``` code block stays in one piece
    unless it alone is too big, then it is cut between lines and each part is fenced again.
    Only a sentence or line longer than the limit is cut elsewhere (after 、 or a space, else
    between characters). Whitespace at the cuts is dropped; no piece is empty.
    """
    if limit < MIN_LIMIT_BYTES:
        raise ValueError(f"limit must be at least {MIN_LIMIT_BYTES} bytes")
    pieces: list[str] = []
    current, size = "", 0
    for unit in _units(text):
        unit_size = escaped_size(unit)
        if size + unit_size <= limit:
            current, size = current + unit, size + unit_size
            continue
        _keep(pieces, current)
        if unit_size <= limit:
            current, size = unit, unit_size
            continue
        parts = _split_code(unit, limit) if unit.startswith(_FENCE) else _split_prose(unit, limit)
        for part in parts[:-1]:
            _keep(pieces, part)
        current, size = parts[-1], escaped_size(parts[-1])
    _keep(pieces, current)
    return pieces


def _keep(pieces: list[str], piece: str) -> None:
    piece = piece.strip()
    if piece:
        pieces.append(piece)


def _units(text: str) -> Iterator[str]:
    position = 0
    for match in _CODE_BLOCK.finditer(text):
        yield from _prose_units(text[position : match.start()])
        yield match.group()
        position = match.end()
    yield from _prose_units(text[position:])


def _prose_units(text: str) -> Iterator[str]:
    return (unit for unit in _PROSE_UNIT.findall(text) if unit)


def _fit(text: str, limit: int) -> str:
    """The longest prefix of `text` whose escaped size is at most `limit` (whole characters)."""
    size = 0
    for index, char in enumerate(text):
        size += escaped_size(char)
        if size > limit:
            return text[:index]
    return text


def _split_prose(unit: str, limit: int) -> list[str]:
    parts: list[str] = []
    rest = unit
    while escaped_size(rest) > limit:
        head = _fit(rest, limit)
        soft = max(head.rfind(char) for char in _SOFT_BREAKS)
        if soft >= len(head) // 2:  # a soft break near the end reads better than a hard cut
            head = head[: soft + 1]
        parts.append(head)
        rest = rest[len(head) :]
    parts.append(rest)
    return parts


def _split_code(block: str, limit: int) -> list[str]:
    first_line, _, body = block.partition("\n")
    opener = first_line if _LANGUAGE_TAG.fullmatch(first_line) else _FENCE
    if opener != first_line:  # code on the fence line itself: keep it as the first code line
        body = first_line[len(_FENCE) :] + "\n" + body
    body = body.rstrip().removesuffix(_FENCE).rstrip("\n")
    budget = limit - escaped_size(opener + "\n") - escaped_size("\n" + _FENCE)
    parts: list[str] = []
    lines: list[str] = []
    size = -1  # n lines take n - 1 line breaks
    for line in _code_lines(body, budget):
        if lines and size + escaped_size(line) + 1 > budget:
            parts.append("\n".join(lines))
            lines, size = [], -1
        lines.append(line)
        size += escaped_size(line) + 1
    parts.append("\n".join(lines))
    return [f"{opener}\n{part}\n{_FENCE}" for part in parts]


def _code_lines(body: str, budget: int) -> Iterator[str]:
    for line in body.split("\n"):
        while escaped_size(line) > budget:
            head = _fit(line, budget)
            yield head
            line = line[len(head) :]
        yield line


def mentioned_user_ids(text: str) -> list[str]:
    """The user ids mentioned in Slack markup, in order, without repeats."""
    return list(dict.fromkeys(_USER_MENTION.findall(text)))


def to_plain_text(text: str, *, bot_user_id: str, names: Mapping[str, str]) -> str:
    """Slack message markup as the text a person meant. The bot's own mention disappears;
    other users become `@name` when `names` knows them, else `@<their id>`."""

    def replace(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            user_id = target[1:]
            if user_id == bot_user_id:
                return ""
            return f"@{names.get(user_id) or label or user_id}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!subteam^"):
            return label or "@group"
        if target.startswith("!date"):
            return label
        if target.startswith("!"):
            return f"@{target[1:]}"  # !here, !channel, !everyone
        url = target.removeprefix("mailto:")
        return url if not label or label in target else f"{label} ({url})"

    plain = _MARKUP.sub(replace, text)
    plain = plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", plain).strip()
