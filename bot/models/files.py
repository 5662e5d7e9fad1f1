"""Reading a model folder's JSON files (config.json, tokenizer_config.json, the bot's own
metadata file) in one place, strictly or leniently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.errors import ModelLoadError, shorten

METADATA_FILE = "bot_model.json"  # what the bot writes into folders it builds (the demo model)


def read_json(file: Path, *, strict: bool = False) -> dict[str, Any]:
    """The JSON object in one of the model folder's files.

    Lenient (the default): {} for a file that is missing or unreadable, for callers that only
    look for hints. Strict: a ModelLoadError naming the file and what is wrong with it, for a
    file the model cannot load without (transformers' own errors do not say which file was
    bad)."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        reason = "UTF-8 のテキストではありません"
    except json.JSONDecodeError as exc:
        reason = f"JSON として {exc.lineno} 行目が正しくありません"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if isinstance(value, dict):
            return value
        reason = "中身が JSON のオブジェクトではありません"
    if not strict:
        return {}
    raise ModelLoadError(
        f"モデルのフォルダ {shorten(str(file.parent), 60)} の {file.name} を読み込めません"
        f"（{reason}）。ファイルを直すか、モデルをダウンロードし直してください。"
    )


def read_metadata(folder: Path, *, strict: bool = False) -> dict[str, Any]:
    """The bot's metadata file in `folder` ({} where there is none)."""
    file = folder / METADATA_FILE
    return read_json(file, strict=strict) if file.exists() else {}
