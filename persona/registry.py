"""Personas: small TOML files that give a channel a voice (a preamble and sampling overrides).

Admins address personas by name, never by file path. The project's own personas live in
`persona/personas/`; `PERSONA_DIR` adds a folder of the user's own.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bot.errors import UnknownName, shorten
from bot.models.sampling import validate_overrides

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Persona:
    name: str
    display_name: str
    description: str = ""
    preamble: str = ""
    prompt_format: str | None = None
    base_models: tuple[str, ...] = ()
    sampling: dict[str, Any] = field(default_factory=dict)
    adapter: Path | None = None  # a peft LoRA adapter folder, trained for `base_models`

    def fits(self, format_name: str) -> bool:
        """A prompt-only persona fits any model that reads its prompt format."""
        return self.prompt_format in (None, format_name)


def parse_persona(data: dict[str, Any], source: str, folder: Path | None = None) -> Persona:
    """A Persona from a TOML file's contents; a relative `adapter` is relative to `folder`."""
    try:
        name = str(data["name"]).strip()
    except KeyError:
        raise ValueError(f"{source}: 'name' is missing") from None
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{source}: name must be letters, digits, '-' or '_'")
    return Persona(
        name=name,
        display_name=str(data.get("display_name", name)),
        description=str(data.get("description", "")),
        preamble=str(data.get("preamble", "")),
        prompt_format=data.get("prompt_format"),
        base_models=tuple(data.get("base_models", ())),
        sampling=validate_overrides(data.get("sampling", {})),
        adapter=_adapter_path(data.get("adapter"), folder),
    )


def _adapter_path(value: Any, folder: Path | None) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_absolute() and folder is not None:
        path = folder / path
    return path


class PersonaRegistry:
    def __init__(self, personas: list[Persona]) -> None:
        self._personas = {p.name: p for p in personas}

    @classmethod
    def load(cls, extra_dir: Path | None = None) -> PersonaRegistry:
        personas: list[Persona] = []
        builtin = resources.files("persona").joinpath("personas")
        sources: list[tuple[str, str, Path | None]] = [
            (str(f), f.read_text(encoding="utf-8"), None)
            for f in builtin.iterdir()
            if f.name.endswith(".toml")
        ]
        if extra_dir is not None and Path(extra_dir).is_dir():
            sources += [
                (str(f), f.read_text(encoding="utf-8"), f.parent)
                for f in sorted(Path(extra_dir).glob("*.toml"))
            ]
        for source, text, folder in sources:
            try:
                personas.append(parse_persona(tomllib.loads(text), source, folder))
            except (ValueError, tomllib.TOMLDecodeError) as exc:
                log.warning("skipped persona file %s: %s", source, exc)
        return cls(personas)

    def names(self) -> list[str]:
        return sorted(self._personas)

    def get(self, name: str) -> Persona:
        try:
            return self._personas[name]
        except KeyError:
            available = "、".join(self.names()) or "（なし）"
            raise UnknownName(
                f"ペルソナ「{shorten(name)}」はありません。使えるペルソナ: {available}"
            ) from None
