"""What a channel's next reply uses: its persona and its sampling, layer by layer.

One place computes it, so the conversation manager generates with exactly what `/status`
shows. Sampling starts from the model's defaults (its card), then `.env`, then the persona, then
the channel's `/set` overrides; each value remembers which layer set it.

A reply budget never takes more than half the model's context (`max_reply_tokens`): the other
half stays for the persona's preamble, the message and the history. `/set` refuses more; a
value from `.env` or a persona is capped (and `.env` is warned about when a model loads).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from bot.chat.ports import Persona, Personas
from bot.errors import InvalidMessage, UnknownName
from bot.models.sampling import SamplingParams, validate_overrides

log = logging.getLogger(__name__)

MODEL_SOURCE = "モデルの既定"
CHANNEL_SOURCE = "このチャンネルの /set"
PROMPT_SHARE = 0.5  # of the context, kept for the prompt whatever the reply budget says


def max_reply_tokens(context_length: int) -> int:
    """The longest reply a model with this context may be asked for."""
    return max(1, int(context_length * (1 - PROMPT_SHARE)))


def env_source(name: str) -> str:
    return f".env/環境変数 {name.upper()}"


class ChannelLike(Protocol):
    persona: str | None
    sampling: dict


class ModelLike(Protocol):
    context_length: int
    sampling_defaults: SamplingParams


@dataclass(frozen=True)
class EffectiveSampling:
    params: SamplingParams
    sources: dict[str, str]  # setting -> the layer that set it (Japanese, for /status)
    capped_from: int | None = None  # the max_new_tokens asked for, when it was capped

    def describe(self) -> list[str]:
        """One line per setting, `・name=value（source）`."""
        lines = []
        for name, value in self.params.as_dict().items():
            source = self.sources[name]
            if name == "max_new_tokens" and self.capped_from is not None:
                source += f"、{self.capped_from} はこのモデルには長すぎるため上限に制限"
            lines.append(f"・{name}={value}（{source}）")
        return lines


@dataclass(frozen=True)
class ChannelSetup:
    """The persona in effect and the sampling layers above the model's defaults."""

    persona: Persona | None
    persona_is_default: bool
    layers: tuple[tuple[str, Mapping[str, Any]], ...]

    def sampling(self, model: ModelLike) -> EffectiveSampling:
        return effective_sampling(model.sampling_defaults, self.layers, model.context_length)


def effective_sampling(
    defaults: SamplingParams,
    layers: tuple[tuple[str, Mapping[str, Any]], ...],
    context_length: int,
) -> EffectiveSampling:
    """Apply `layers` (source, overrides) in order over `defaults`, then cap the reply budget."""
    values = defaults.as_dict()
    sources = dict.fromkeys(values, MODEL_SOURCE)
    for source, overrides in layers:
        for name, value in validate_overrides(overrides).items():
            values[name], sources[name] = value, source
    cap = max_reply_tokens(context_length)
    capped_from = None
    if values["max_new_tokens"] > cap:
        capped_from, values["max_new_tokens"] = values["max_new_tokens"], cap
    return EffectiveSampling(SamplingParams(**values), sources, capped_from)


class SettingsResolver:
    """Builds each channel's `ChannelSetup` from the environment's overrides, the default
    persona and what the channel has chosen."""

    def __init__(
        self,
        personas: Personas,
        *,
        env_overrides: Mapping[str, Any] | None = None,
        default_persona: str = "",
    ) -> None:
        self.personas = personas
        known = {f.name for f in fields(SamplingParams)}
        self.env_overrides = {
            k: v for k, v in (env_overrides or {}).items() if v is not None and k in known
        }
        self.default_persona = default_persona

    def persona(self, name: str | None) -> Persona | None:
        """The named persona; one whose file went missing is skipped (logged), so a deleted
        persona never locks a channel out of the bot."""
        if not name:
            return None
        try:
            return self.personas.get(name)
        except UnknownName:
            log.warning("persona %r is set but no longer exists; answering without it", name)
            return None

    def setup(self, channel: ChannelLike) -> ChannelSetup:
        persona = self.persona(channel.persona)
        is_default = persona is None and bool(self.default_persona)
        if persona is None:
            persona = self.persona(self.default_persona)
        layers: list[tuple[str, Mapping[str, Any]]] = [
            (env_source(name), {name: value}) for name, value in self.env_overrides.items()
        ]
        if persona is not None and persona.sampling:
            layers.append((f"ペルソナ {persona.name}", persona.sampling))
        if channel.sampling:
            layers.append((CHANNEL_SOURCE, channel.sampling))
        return ChannelSetup(persona, is_default and persona is not None, tuple(layers))

    def check_reply_budget(self, name: str, value: Any, model: ModelLike | None) -> None:
        """Refuse a `/set max_new_tokens` that would leave the prompt less than its share."""
        if name != "max_new_tokens" or model is None:
            return
        cap = max_reply_tokens(model.context_length)
        if int(value) > cap:
            raise InvalidMessage(
                f"max_new_tokens は今のモデル（一度に読める長さ {model.context_length:,} "
                f"トークン）では {cap:,} 以下にしてください。残りはメッセージと会話の履歴に使います。"
            )

    def env_budget_warning(self, model: ModelLike, model_name: str) -> str | None:
        """A line for the log when MAX_NEW_TOKENS is capped for `model`, else None."""
        asked = self.env_overrides.get("max_new_tokens")
        cap = max_reply_tokens(model.context_length)
        if asked is None or int(asked) <= cap:
            return None
        return (
            f"MAX_NEW_TOKENS={asked} leaves no room for the prompt on {model_name} "
            f"(context {model.context_length} tokens): replies use at most {cap} tokens"
        )
