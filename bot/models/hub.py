"""Finding the folder a model name means: the demo model, a local folder, or a Hugging Face
hub id, taken from the hub cache when it is there (no network needed) and downloaded when not."""

from __future__ import annotations

import errno
import logging
import re
from pathlib import Path

from bot.errors import ModelLoadError, shorten
from bot.models.catalogue import find_entry
from bot.models.demo import DEMO_NAME, ensure_demo_model

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_NAME_MAX = 96  # the Hub's limit for an organisation or repository name
_WEIGHT_PATTERNS = ["*.json", "*.model", "*.txt", "*.safetensors", "tokenizer*"]
OFFLINE_HINT = (
    "ネットワークのない環境では MODEL=demo（同梱のデモモデル）か、"
    "ダウンロード済みモデルのフォルダのパス（例: MODEL=/models/rinna-3.6b）を指定してください。"
)


def _name_too_long(spec: str) -> ModelLoadError:
    return ModelLoadError(
        f"モデル名が長すぎます（{len(spec)} 文字: {shorten(spec, 30)}）。Hugging Face の ID（例: "
        "rinna/japanese-gpt-neox-3.6b-instruction-ppo）かフォルダのパスを指定してください。"
    )


def resolve_folder(spec: str, cache_dir: Path, hf_token: str | None = None) -> Path:
    """The local folder holding the model named by `spec`: the demo model (built into
    `cache_dir`), a folder, or a hub id's snapshot (from the hub cache, else downloaded)."""
    spec = spec.strip()
    if spec == DEMO_NAME:
        return ensure_demo_model(cache_dir)
    entry = find_entry(spec)
    if entry is not None:
        spec = entry.hub_id
    path = Path(spec).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _name_too_long(spec) from exc
        raise ModelLoadError(
            f"フォルダ {shorten(str(path), 60)} を開けません（{exc.strerror or type(exc).__name__}）。",
            detail=str(exc),
        ) from exc
    if exists:
        if not (path / "config.json").exists():
            raise ModelLoadError(
                f"フォルダ {shorten(str(path), 60)} に config.json がありません。"
                "モデルのフォルダを指定してください。"
            )
        return path
    if _HUB_ID.match(spec) and max(len(part) for part in spec.split("/")) > _HUB_NAME_MAX:
        raise _name_too_long(spec)
    if not _HUB_ID.match(spec):
        raise ModelLoadError(
            f"モデル「{shorten(spec, 60)}」が見つかりません。Hugging Face の ID（例: rinna/japanese-"
            f"gpt-neox-3.6b-instruction-ppo）かフォルダのパスを指定してください。{OFFLINE_HINT}"
        )
    return _download(spec, hf_token)


def _download(repo_id: str, hf_token: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    def fetch(patterns: list[str]) -> Path:
        try:  # a copy already in the cache needs no network
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
        except (OSError, HfHubHTTPError):
            return Path(snapshot_download(repo_id, allow_patterns=patterns, token=hf_token))

    try:
        folder = fetch(_WEIGHT_PATTERNS)
        if not any(folder.glob("*.safetensors")):  # older repos ship only pytorch_model.bin
            folder = fetch([*_WEIGHT_PATTERNS, "*.bin"])
    except (OSError, HfHubHTTPError, ValueError) as exc:
        log.debug("download of %s failed", repo_id, exc_info=True)
        raise ModelLoadError(
            f"モデル「{repo_id}」をダウンロードできませんでした（{type(exc).__name__}）。{OFFLINE_HINT}",
            detail=str(exc),
        ) from exc
    return folder
