"""Which model a folder holds, and so which prompt format and sampling defaults it needs.

A folder's name is the user's choice (`--local-dir /models/rinna-3.6b` holds the PPO model), so
it is the last thing to trust. What the folder holds and how it got there say more:

1. the name the user gave, when it is a catalogue name or hub id (`MODEL=rinna-3.6b-ppo`);
2. the hub cache path `…/models--org--name/snapshots/<commit>`, written by huggingface_hub;
3. the model card `README.md` that `huggingface-cli download` fetches with the weights: its
   title (`# japanese-gpt-neox-3.6b-instruction-ppo`) or the id in its `from_pretrained("…")`
   example. Not every id it mentions: rinna's cards list the whole model series and name the
   base model in their front matter;
4. `_name_or_path` in `config.json` or `tokenizer_config.json`, when it is a hub id;
5. the folder's own name (a hub id's `org/name` at the end of the path, or a name the format
   heuristic understands).

`--local-dir` downloads leave `.cache/huggingface/download/<file>.metadata` (commit hash, etag,
time; see huggingface_hub's `_local_folder.py`) but no repo id: the metadata only says that a file
came from the hub unchanged, which is reported with the card as evidence.

The format follows the identified model; PROMPT_FORMAT other than `auto` overrides it, and
without any identification the tokenizer decides (`<NL>` newlines or real ones).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.models.catalogue import CATALOGUE, ModelEntry, find_entry
from bot.models.files import read_json
from bot.models.prompt_formats import FORMATS, PLAIN, PLAIN_NL, PromptFormat, detect_format
from bot.models.sampling import FORMAT_DEFAULTS, SamplingParams

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_CACHE = re.compile(r"models--([\w.-]+?)--([\w.-]+)$")
_FROM_PRETRAINED = re.compile(r"from_pretrained\(\s*[\"']([\w.-]+/[\w.-]+)[\"']")
_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.M)
_CARD_BYTES = 256 * 1024  # cards are a few kB; never read a huge file whole


@dataclass(frozen=True)
class Identity:
    """A model named by something in or around its folder. `kind` says what (see KIND_TEXT)."""

    name: str  # a hub id, or a repo name without its owner (a card's title)
    kind: str
    detail: str = ""  # e.g. the commit a --local-dir download came from

    @property
    def entry(self) -> ModelEntry | None:
        return find_entry(self.name) or _by_repo_name(self.name)


# What each kind of evidence is, for the log (English) and /status (Japanese).
KIND_TEXT: dict[str, tuple[str, str]] = {
    "demo": ("the demo model's bot_model.json", "デモモデルの bot_model.json"),
    "spec": ("the model name given", "指定されたモデル名"),
    "hub-cache": ("the Hugging Face cache path", "Hugging Face キャッシュのパス"),
    "card-title": ("the model card's title (README.md)", "モデルカード（README.md）の見出し"),
    "card-usage": (
        "the model card's from_pretrained example (README.md)",
        "モデルカード（README.md）の使用例",
    ),
    "config": ("_name_or_path in config.json", "config.json の _name_or_path"),
    "tokenizer-config": (
        "name_or_path in tokenizer_config.json",
        "tokenizer_config.json の name_or_path",
    ),
    "folder": ("the folder's name", "フォルダ名"),
    "setting": ("PROMPT_FORMAT", "PROMPT_FORMAT の設定"),
    "tokenizer": ("the tokenizer (no model identified)", "トークナイザー（モデルを特定できず）"),
}


@dataclass(frozen=True)
class Detected:
    """What the loader serves a model with, and why."""

    prompt_format: PromptFormat
    sampling: SamplingParams
    context_length: int | None  # None: take it from the model's config
    identity: Identity | None
    reason_kind: str  # a KIND_TEXT key: what decided the format
    entry: ModelEntry | None = None

    def reason(self, *, japanese: bool = False) -> str:
        """Why this format: the evidence, and the model it named."""
        text = KIND_TEXT[self.reason_kind][1 if japanese else 0]
        identity = self.identity
        if identity is None or self.reason_kind in ("setting", "tokenizer", "demo"):
            return text
        facts = ", ".join(f for f in (text, identity.detail) if f)
        return f"{identity.name}（{facts}）" if japanese else f"{identity.name} ({facts})"


def _by_repo_name(name: str) -> ModelEntry | None:
    """A catalogue entry whose hub id ends in `name` (a card's title has no owner)."""
    if "/" in name:
        return None
    matches = [e for e in CATALOGUE if e.hub_id.split("/", 1)[1].lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def identify(spec: str, folder: Path) -> Identity | None:
    """The model `folder` holds, from the strongest evidence available (see the module doc)."""
    spec = spec.strip()
    named = find_entry(spec)
    if named is not None:
        return Identity(named.hub_id, "spec")
    if _HUB_ID.match(spec) and not Path(spec).exists():
        return Identity(spec, "spec")
    for finder in (_from_hub_cache, _from_card, _from_configs, _from_folder_name):
        found = finder(folder)
        if found is not None:
            return found
    return None


def _from_hub_cache(folder: Path) -> Identity | None:
    parts = folder.resolve().parts
    for i in range(len(parts) - 1, 0, -1):
        match = _HUB_CACHE.match(parts[i])
        if match and i + 1 < len(parts) and parts[i + 1] == "snapshots":
            return Identity(f"{match.group(1)}/{match.group(2)}", "hub-cache")
    return None


def _read_text(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.read(_CARD_BYTES)
    except OSError:
        return ""


def _local_dir_commit(folder: Path, filename: str) -> str:
    """The commit a `huggingface-cli download --local-dir` fetched `filename` at, or ""."""
    metadata = folder / ".cache" / "huggingface" / "download" / f"{filename}.metadata"
    first = _read_text(metadata).splitlines()[:1]
    commit = first[0].strip() if first else ""
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else ""


def _provenance(folder: Path, filename: str) -> str:
    commit = _local_dir_commit(folder, filename)
    return f"huggingface-cli --local-dir, commit {commit[:7]}" if commit else ""


def card_identity(card: str) -> tuple[str, str] | None:
    """(name, kind) from a model card's text: its title when that names a model, else the id
    its `from_pretrained` examples load most often. Pure, for tests with real cards."""
    body = _FRONT_MATTER.sub("", card, count=1)
    title = _TITLE.search(body)
    if title:
        name = title.group(1).strip().strip("`").strip()
        if find_entry(name) or _by_repo_name(name) or _HUB_ID.match(name):
            return name, "card-title"
    ids = _FROM_PRETRAINED.findall(body)
    if ids:
        return max(dict.fromkeys(ids), key=ids.count), "card-usage"
    return None


def _from_card(folder: Path) -> Identity | None:
    found = card_identity(_read_text(folder / "README.md"))
    if found is None:
        return None
    return Identity(found[0], found[1], _provenance(folder, "README.md"))


def _from_configs(folder: Path) -> Identity | None:
    for filename, key, kind in (
        ("config.json", "_name_or_path", "config"),
        ("tokenizer_config.json", "name_or_path", "tokenizer-config"),
        ("tokenizer_config.json", "_name_or_path", "tokenizer-config"),
    ):
        name = str(read_json(folder / filename).get(key) or "").strip()
        # A training run's local path says nothing; a hub id names the model.
        if _HUB_ID.match(name) and not Path(name).is_absolute():
            return Identity(name, kind, _provenance(folder, filename))
    return None


def _from_folder_name(folder: Path) -> Identity | None:
    parts = folder.parts
    if len(parts) >= 2 and find_entry(f"{parts[-2]}/{parts[-1]}"):
        return Identity(f"{parts[-2]}/{parts[-1]}", "folder")
    return Identity(str(folder), "folder")


def detect(
    spec: str,
    folder: Path,
    *,
    setting: str,
    has_nl_piece: bool,
    metadata: dict[str, Any] | None = None,
) -> Detected:
    """The format, sampling defaults and context length to serve the model in `folder` with.

    `setting` is PROMPT_FORMAT: `auto` follows the identified model; any other value wins (and
    a disagreement with the identified model is logged)."""
    metadata = metadata or {}
    identity, entry, named, kind = None, None, None, "tokenizer"
    if metadata.get("prompt_format"):  # the demo model says what it is
        named, kind = FORMATS[metadata["prompt_format"]], "demo"
    else:
        identity = identify(spec, folder)
        entry = identity.entry if identity else None
        if entry is not None:
            named = FORMATS[entry.prompt_format]
        elif identity is not None:
            named = detect_format(identity.name, has_nl_piece)
            if identity.kind == "folder" and named.name == "plain":
                named = None  # a folder name that says nothing is no identification
        if named is not None and identity is not None:
            kind = identity.kind
    if named is not None and named.name == "plain":
        named = PLAIN_NL if has_nl_piece else PLAIN  # how a base model writes newlines
    if setting != "auto":
        chosen = PLAIN_NL if setting == "plain" and has_nl_piece else FORMATS[setting]
        if named is not None and named.name != chosen.name:
            log.warning(
                "PROMPT_FORMAT=%s overrides the %s format of %s", setting, named.name, identity
            )
        same = entry is not None and named is not None and named.name == chosen.name
        return Detected(
            chosen,
            entry.sampling if same and entry else FORMAT_DEFAULTS[chosen.name],
            entry.context_length if entry else metadata.get("context_length"),
            identity,
            "setting",
            entry,
        )
    if named is None:
        fmt = PLAIN_NL if has_nl_piece else PLAIN
        return Detected(fmt, FORMAT_DEFAULTS[fmt.name], None, None, "tokenizer")
    context = entry.context_length if entry else metadata.get("context_length")
    sampling = entry.sampling if entry else FORMAT_DEFAULTS[named.name]
    return Detected(named, sampling, context, identity, kind, entry)
