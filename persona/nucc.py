"""The Nagoya University Conversation Corpus (名大会話コーパス, NUCC) → dialogue training examples.

A NUCC file is a transcript: `＠` header lines, `％ｃｏｍ：` comments, utterances `F107：…` (a
speaker code and a full-width colon), continuation lines with no speaker code, and `＠ＥＮＤ`.
This module reads the whole format as the corpus distributions write it (see docs/PERSONAS.md),
cleans each utterance and turns every conversation into examples, one JSON object per line:

    {"context": [{"speaker": "F107", "text": "…"}, …],   # up to `context_turns` turns, oldest first
     "reply": {"speaker": "F023", "text": "…"},
     "source": "data001.txt", "conversation": 0}

A *turn* is a run of one speaker's utterances (merged), so context and reply always alternate
speakers. `＜中略＞` (a passage cut from the transcript) starts a new segment: no example's context
reaches across a cut. The corpus is licensed for research only (CC BY-NC-ND 4.0): never ship it,
the pairs made from it, or an adapter trained on them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NON_PARTICIPANT = "X"
DEFAULT_MASK = "〇〇"  # the usual Japanese stand-in for a hidden name
AUTO_ENCODINGS = ("utf-8", "euc_jp", "euc_jis_2004", "cp932")

# Speaker codes are F/M plus digits (F107, M023), half- or full-width; Ｘ/X is a non-participant.
# Colons may be doubled (`F107：：`) and are sometimes a semicolon.
_SPEAKER = re.compile(r"^(?P<code>[FMＦＭ][0-9０-９]{1,4}|[XＸ])\s*[：:；;]+\s*")
# Matched on NFKC text, so ＠/@, ：/: and ；/; variants look the same here.
_PARTICIPANT = re.compile(r"^参加者\s*(?P<code>[FM]\d+)\s*[:;]?\s*(?P<value>.*)$")
_RELATION = re.compile(r"^参加者(?:の|間の|間)?関係\s*[:;]?\s*(?P<value>.*)$")
_DATA = re.compile(r"^データ\s*(?P<number>\d+)\s*(?P<value>.*)$")
_END = re.compile(r"^end\W*$")
_KNOWN_KEYS = ("収集年月日", "収集場所", "場所", "録音時間", "時間")
# Header lines that lost their `＠` are recognised by shapes no conversation line has; `場所：`
# alone only counts before the first utterance.
_BARE_HEADER = re.compile(
    r"^(?:参加者\s*[FM]\d+|参加者(?:の|間の|間)?関係|収集年月日|データ\s*\d+\s*\()"
)
_BARE_HEADER_BEFORE_TALK = re.compile(r"^(?:収集場所|場所|録音時間)\s*[:;]")

# Cleaning. Every pattern excludes its own brackets inside, so `（うん）…（へえ）` loses only the
# two backchannels, not everything between the first `（` and the last `）` (the greedy-regex bug).
_CUT = re.compile(r"[＜<]\s*中略\s*[＞>]")
_ANNOTATION = re.compile(r"[＜<][^＜＞<>]*[＞>]")
_BACKCHANNEL = re.compile(r"[（(][^（）()]*[）)]")
_STRAY_BRACKET = re.compile(r"[＜＞（）]")
_MASKED = re.compile(r"[＊*]{2,}|＊")
_SPACES = re.compile(r"\s+")
# A space between two non-ASCII characters is transcription noise in Japanese; between ASCII
# words it separates them.
_SPACE_NEAR_CJK = re.compile(r"(?<=[^\x00-\x7f]) | (?=[^\x00-\x7f])")


class NuccError(Exception):
    """A file that cannot be read as NUCC text (unknown encoding, unreadable)."""


@dataclass
class NuccOptions:
    context_turns: int = 4  # how many turns before the reply an example keeps
    mask: str | None = DEFAULT_MASK  # replaces `＊＊＊`; None keeps the asterisks
    keep_nonparticipant: bool = False  # keep Ｘ turns as context (never as a reply)
    encoding: str = "auto"  # or a Python codec name such as "euc_jp"

    def __post_init__(self) -> None:
        if self.context_turns < 1:
            raise ValueError("context_turns must be at least 1")


@dataclass
class Utterance:
    speaker: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"speaker": self.speaker, "text": self.text}


@dataclass
class Conversation:
    source: str
    index: int  # the conversation's place in its file, from 0
    header: dict[str, str] = field(default_factory=dict)
    participants: dict[str, str] = field(default_factory=dict)  # code -> description
    relation: str = ""
    # Turns (same-speaker runs merged) split at `＜中略＞` cuts.
    segments: list[list[Utterance]] = field(default_factory=lambda: [[]])

    @property
    def turns(self) -> list[Utterance]:
        return [turn for segment in self.segments for turn in segment]

    @property
    def speakers(self) -> set[str]:
        return {t.speaker for t in self.turns if t.speaker != NON_PARTICIPANT}


@dataclass
class NuccStats:
    """What a run did. `skipped` counts input lines that produced no text, by reason; `cleaned`
    counts what cleaning removed or changed."""

    files: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # file -> why
    encodings: Counter[str] = field(default_factory=Counter)
    conversations: int = 0
    lines: int = 0
    utterances: int = 0  # speaker lines that kept some text after cleaning
    continuations: int = 0  # lines without a speaker code that kept some text
    turns: int = 0  # after merging same-speaker runs
    examples: int = 0
    speakers: Counter[int] = field(default_factory=Counter)  # speakers per conversation
    skipped: Counter[str] = field(default_factory=Counter)
    cleaned: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        def counts(counter: Counter[Any], suffix: str = "") -> str:
            items = sorted((k, n) for k, n in counter.items() if n)
            return ", ".join(f"{key}{suffix}: {n}" for key, n in items) or "none"

        lines = [
            f"files: {self.files} ({counts(self.encodings)}), unreadable: {len(self.unreadable)}",
            f"conversations: {self.conversations} (by number of speakers: {counts(self.speakers)})",
            f"lines: {self.lines}, utterances: {self.utterances} (+{self.continuations} "
            f"continuation lines), turns: {self.turns}, examples: {self.examples}",
            f"skipped lines: {sum(self.skipped.values())}",
            *(f"  {reason}: {n}" for reason, n in self.skipped.most_common()),
            f"cleaning: {counts(self.cleaned)}",
            *(f"unreadable {name}: {why}" for name, why in self.unreadable.items()),
        ]
        return "\n".join(lines)


def decode(data: bytes, encoding: str = "auto") -> tuple[str, str]:
    """Decode a NUCC file. "auto" tries UTF-8 (with or without BOM), then EUC-JP (the older
    distribution), then Shift_JIS; a strict decode that succeeds is taken as the answer."""
    if encoding != "auto":
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise NuccError(f"cannot decode as {encoding}: {exc}") from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for candidate in AUTO_ENCODINGS:
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError:
            continue
    raise NuccError("not UTF-8, EUC-JP or Shift_JIS text (pass an explicit encoding)")


def clean_text(text: str, mask: str | None, counts: Counter[str]) -> list[str]:
    """Clean one line's text. Returns the pieces between `＜中略＞` cuts (one piece when there is
    no cut); a piece may be empty."""
    pieces = _CUT.split(text)
    counts["cut ＜中略＞"] += len(pieces) - 1
    return [_clean_piece(piece, mask, counts) for piece in pieces]


def _clean_piece(text: str, mask: str | None, counts: Counter[str]) -> str:
    text, n = _ANNOTATION.subn("", text)
    counts["annotation ＜…＞"] += n
    while True:  # innermost first, so nested parentheses go too
        text, n = _BACKCHANNEL.subn("", text)
        counts["backchannel （…）"] += n
        if not n:
            break
    text, n = _STRAY_BRACKET.subn("", text)
    counts["unbalanced bracket"] += n
    if mask is not None:
        text, n = _MASKED.subn(mask, text)
        counts["masked ＊＊＊"] += n
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_NEAR_CJK.sub("", text)


def _join(previous: str, following: str) -> str:
    """Join two utterances of one speaker: directly after punctuation, else with a space, so two
    fragments (`そうそう` + `だからね`) do not read as one word."""
    if not previous or _is_punctuation(previous[-1]) or _is_punctuation(following[0]):
        return previous + following
    return f"{previous} {following}"


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _concat(previous: str, following: str) -> str:
    """Join a continuation line to its utterance: Japanese runs on; ASCII words keep a space."""
    if previous[-1:].isascii() and previous[-1:].isalnum() and following[:1].isascii():
        return f"{previous} {following}"
    return previous + following


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


class _Parser:
    """A line-by-line state machine over one file's text."""

    def __init__(self, source: str, options: NuccOptions, stats: NuccStats) -> None:
        self.source = source
        self.options = options
        self.stats = stats
        self.conversations: list[Conversation] = []
        self.conv = self._new_conversation()
        self.speaker: str | None = None  # whose turn a continuation line continues
        self.talked = False  # the current conversation has had an utterance line
        self.ended = False  # `＠ＥＮＤ` seen and no header since
        self.declared_warned: set[str] = set()

    def _new_conversation(self) -> Conversation:
        conv = Conversation(self.source, len(self.conversations))
        self.conversations.append(conv)
        return conv

    def _start_over(self) -> None:
        self.conv = self._new_conversation()
        self.speaker, self.talked, self.ended = None, False, False
        self.declared_warned = set()

    def skip(self, reason: str) -> None:
        self.stats.skipped[reason] += 1

    def feed(self, raw: str) -> None:
        self.stats.lines += 1
        # str.strip removes full-width spaces too; a BOM is not whitespace to it.
        line = raw.strip().lstrip("\ufeff").strip()
        if not line:
            self.skip("blank")
            return
        norm = _nfkc(line)
        if norm.startswith("%"):
            self.skip("comment ％ｃｏｍ")
            return
        if norm.startswith("@"):
            body = norm[1:].strip()
            if _END.match(body.casefold()):
                self.skip("end marker ＠ＥＮＤ")
                self.speaker, self.ended = None, True
                return
            self.header(body)
            return
        if _BARE_HEADER.match(norm) or (not self.talked and _BARE_HEADER_BEFORE_TALK.match(norm)):
            self.stats.cleaned["header without ＠"] += 1
            self.header(norm)
            return
        if self.ended:
            self.skip("text after ＠ＥＮＤ")
            return
        match = _SPEAKER.match(line)
        if match:
            self.utterance(_nfkc(match["code"]), line[match.end() :])
        else:
            self.continuation(line)

    def header(self, body: str) -> None:
        self.skip("header ＠")
        new_data = _DATA.match(body) is not None
        if self.ended or (new_data and self.talked):
            self._start_over()
        conv = self.conv
        if m := _PARTICIPANT.match(body):
            conv.participants[m["code"]] = m["value"].strip()
        elif m := _RELATION.match(body):
            conv.relation = m["value"].strip()
            conv.header["参加者の関係"] = conv.relation
        elif m := _DATA.match(body):
            conv.header["データ"] = f"{m['number']}{m['value']}".strip()
        else:
            key, value = _split_header(body)
            conv.header[key] = value

    def utterance(self, code: str, rest: str) -> None:
        self.talked = True
        self.speaker = code
        if code == NON_PARTICIPANT and not self.options.keep_nonparticipant:
            self.skip("non-participant Ｘ")
            return
        if (
            code != NON_PARTICIPANT
            and self.conv.participants
            and code not in self.conv.participants
            and code not in self.declared_warned
        ):
            self.declared_warned.add(code)
            self.stats.cleaned["speaker not in header"] += 1
        self.add(code, rest, new_utterance=True)

    def continuation(self, line: str) -> None:
        if self.speaker is None:
            self.skip("text before any speaker")
            return
        if self.speaker == NON_PARTICIPANT and not self.options.keep_nonparticipant:
            self.skip("non-participant Ｘ")
            return
        self.add(self.speaker, line, new_utterance=False)

    def add(self, speaker: str, text: str, *, new_utterance: bool) -> None:
        pieces = clean_text(text, self.options.mask, self.stats.cleaned)
        if not any(pieces):
            self.skip("nothing left after cleaning")
        elif new_utterance:
            self.stats.utterances += 1
        else:
            self.stats.continuations += 1
        for i, piece in enumerate(pieces):
            if i > 0:  # a `＜中略＞` cut: what follows is a new stretch of talk
                if self.conv.segments[-1]:
                    self.conv.segments.append([])
                new_utterance = True
            if piece:
                self._append(speaker, piece, new_utterance=new_utterance)

    def _append(self, speaker: str, text: str, *, new_utterance: bool) -> None:
        segment = self.conv.segments[-1]
        if segment and segment[-1].speaker == speaker:
            last = segment[-1]
            if new_utterance:
                self.stats.cleaned["same-speaker utterances merged"] += 1
                last.text = _join(last.text, text)
            else:
                last.text = _concat(last.text, text)
        else:
            segment.append(Utterance(speaker, text))

    def finish(self) -> list[Conversation]:
        kept = []
        for conv in self.conversations:
            conv.segments = [s for s in conv.segments if s] or [[]]
            if conv.turns:
                kept.append(conv)
        for i, conv in enumerate(kept):
            conv.index = i
        return kept


def _split_header(body: str) -> tuple[str, str]:
    for key in _KNOWN_KEYS:
        if body.startswith(key):
            return key, body[len(key) :].lstrip(":; ").strip()
    if m := re.match(r"^([^:;]+)[:;]\s*(.*)$", body):
        return m[1].strip(), m[2].strip()
    return body.strip(), ""


def parse_text(
    text: str,
    source: str = "<text>",
    options: NuccOptions | None = None,
    stats: NuccStats | None = None,
) -> list[Conversation]:
    """Parse one file's text into conversations with at least one turn."""
    options = options or NuccOptions()
    stats = stats if stats is not None else NuccStats()
    parser = _Parser(source, options, stats)
    for line in text.splitlines():
        parser.feed(line)
    conversations = parser.finish()
    for conv in conversations:
        stats.conversations += 1
        stats.turns += len(conv.turns)
        stats.speakers[len(conv.speakers)] += 1
    return conversations


def make_examples(conv: Conversation, context_turns: int) -> Iterator[dict[str, Any]]:
    """One example per turn that has a turn before it in its segment; Ｘ never replies."""
    for segment in conv.segments:
        for i in range(1, len(segment)):
            reply = segment[i]
            if reply.speaker == NON_PARTICIPANT:
                continue
            context = segment[max(0, i - context_turns) : i]
            yield {
                "context": [t.as_dict() for t in context],
                "reply": reply.as_dict(),
                "source": conv.source,
                "conversation": conv.index,
            }


def find_files(paths: Iterable[Path | str]) -> list[tuple[Path, str]]:
    """Files named directly, and every `*.txt` under folders (recursively, sorted). Each comes
    with its source name: the file name, or its path relative to the folder given."""
    found: list[tuple[Path, str]] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found += [
                (file, file.relative_to(path).as_posix())
                for file in sorted(path.rglob("*.txt"))
                if file.is_file()
            ]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def iter_examples(
    paths: Iterable[Path | str], options: NuccOptions | None = None, stats: NuccStats | None = None
) -> Iterator[dict[str, Any]]:
    """Examples from every file under `paths`; unreadable files are recorded in `stats`."""
    options = options or NuccOptions()
    stats = stats if stats is not None else NuccStats()
    for file, source in find_files(paths):
        stats.files += 1
        try:
            text, encoding = decode(file.read_bytes(), options.encoding)
        except (OSError, NuccError) as exc:
            stats.unreadable[str(file)] = str(exc)
            continue
        stats.encodings[encoding] += 1
        for conv in parse_text(text, source, options, stats):
            for example in make_examples(conv, options.context_turns):
                stats.examples += 1
                yield example


def write_examples(
    paths: Iterable[Path | str], out: IO[str], options: NuccOptions | None = None
) -> NuccStats:
    """Write examples as JSON lines (UTF-8, unescaped Japanese) and return the statistics."""
    stats = NuccStats()
    for example in iter_examples(paths, options, stats):
        out.write(json.dumps(example, ensure_ascii=False) + "\n")
    return stats
