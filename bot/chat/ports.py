"""What the chat needs from outside itself, as protocols: the personas a channel can take on
(persona/registry.py implements them; bootstrap hands them in) and the observer that hears how
each message was answered (bot/service/metrics.py implements it)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from bot.engines.contract import GenerationResult
from bot.errors import UserFacingError


class Persona(Protocol):
    """A voice for a channel: a preamble, sampling overrides, perhaps a LoRA adapter."""

    @property
    def name(self) -> str: ...

    @property
    def display_name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def preamble(self) -> str: ...

    @property
    def prompt_format(self) -> str | None:
        """The format it was written (or its adapter trained) for; None fits any model."""
        ...

    @property
    def base_models(self) -> tuple[str, ...]: ...

    @property
    def sampling(self) -> Mapping[str, Any]: ...

    @property
    def adapter(self) -> Path | None:
        """Its LoRA adapter's folder, when it has one."""
        ...

    def fits(self, format_name: str) -> bool:
        """Whether a prompt-only persona reads right on a model of this prompt format."""
        ...


class Personas(Protocol):
    """The personas admins address by name."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Persona:
        """The named persona; UnknownName (with the list, for the user) when there is none."""
        ...


class ReplyObserver(Protocol):
    def received(self, platform: str) -> None:
        """A message reached the manager (commands included)."""

    def refused(self, platform: str, error: UserFacingError) -> None:
        """The message was answered with `error`'s message instead of a reply."""

    def failed(self, platform: str) -> None:
        """Something unexpected failed; the user got the generic apology."""

    def replied(self, platform: str, result: GenerationResult, latency_s: float) -> None:
        """A generated reply was sent, `latency_s` after the message reached the manager."""


class NoObserver:
    def received(self, platform: str) -> None:
        pass

    def refused(self, platform: str, error: UserFacingError) -> None:
        pass

    def failed(self, platform: str) -> None:
        pass

    def replied(self, platform: str, result: GenerationResult, latency_s: float) -> None:
        pass
