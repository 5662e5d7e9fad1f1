"""The one reader of the environment: every knob the bot has, read from env vars and `.env`.

Each field says what it does (`description`) and what reads it (its group), and each verb's
`--help` lists its settings from them (`settings_help`), so the help cannot drift from the code.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PromptFormatName = Literal["auto", "rinna", "line", "plain", "gptsan"]  # prompt_format.FORMATS
# Comma-separated ids in the environment ("123,456"), a list in code.
IdList = Annotated[list[str], NoDecode]

# What reads a setting, in the order `--help` lists them (.env.example's sections).
GROUPS = (
    "engine",
    "model",
    "serving",
    "generation",
    "conversations",
    "console",
    "health",
    "logging",
    "discord",
    "slack",
)


def _group(name: str) -> dict[str, Any]:
    """A field's `json_schema_extra`: the group that reads it."""
    if name not in GROUPS:
        raise ValueError(f"{name!r} is not a settings group: {', '.join(GROUPS)}")
    return {"group": name}


class Settings(BaseSettings):
    """Every key is documented in `.env.example`. Secrets are `SecretStr` and never logged."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Engine: what generates (see README "Engines")
    engine: Literal["transformers", "llamacpp", "openai"] = Field(
        "transformers", description="what generates replies", json_schema_extra=_group("engine")
    )
    n_gpu_layers: int = Field(
        0,
        ge=-1,
        description="llamacpp: layers offloaded to a GPU, -1 = all (a GPU build)",
        json_schema_extra=_group("engine"),
    )
    n_threads: int = Field(
        0,
        ge=0,
        description="llamacpp: CPU threads, 0 = every core",
        json_schema_extra=_group("engine"),
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="openai: the server's address, up to /v1",
        json_schema_extra=_group("engine"),
    )
    openai_api_key: SecretStr | None = Field(
        None, description="openai: the server's API key", json_schema_extra=_group("engine")
    )
    openai_tokenizer: str = Field(
        "",
        description="openai: folder or hub id of the served model's tokenizer, when MODEL is neither",
        json_schema_extra=_group("engine"),
    )

    # Model
    model: str = Field(
        "rinna/japanese-gpt-neox-3.6b-instruction-ppo",
        description="a hub id, a local folder with config.json, or demo (a tiny offline model)",
        json_schema_extra=_group("model"),
    )
    prompt_format: PromptFormatName = Field(
        "auto",
        description="the chat template; auto detects it from the model",
        json_schema_extra=_group("model"),
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="where the model runs", json_schema_extra=_group("model")
    )
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = Field(
        "auto",
        description="weights' precision; auto: bf16/fp16 on a GPU, fp32 on a CPU",
        json_schema_extra=_group("model"),
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none",
        description="bitsandbytes on a CUDA GPU (not GPTSAN)",
        json_schema_extra=_group("model"),
    )
    model_cache_dir: Path = Field(
        Path("./data/models"),
        description="where the bot builds models: the demo model, GGUF conversions",
        json_schema_extra=_group("model"),
    )
    hf_token: SecretStr | None = Field(
        None,
        description="Hugging Face token, only for gated or private hub models",
        json_schema_extra=_group("model"),
    )

    # Serving
    max_batch_size: int = Field(
        8,
        ge=1,
        le=256,
        description="requests generated together, at most",
        json_schema_extra=_group("serving"),
    )
    # So that a burst of channels shares one batch; a lone request never waits.
    batch_window_ms: float = Field(
        250,
        ge=0,
        le=60000,
        description="the longest a starting batch waits for requests still being prepared",
        json_schema_extra=_group("serving"),
    )
    max_queue: int = Field(
        64,
        ge=1,
        description='waiting requests beyond this are answered "busy"',
        json_schema_extra=_group("serving"),
    )
    idle_unload_minutes: float = Field(
        0,
        ge=0,
        description="free the model after this idle time, 0 = never",
        json_schema_extra=_group("serving"),
    )
    # A second signal stops the replies at once.
    shutdown_grace_seconds: float = Field(
        20,
        ge=0,
        description="on SIGTERM or Ctrl-C, how long replies in progress may take to finish",
        json_schema_extra=_group("serving"),
    )
    stream_update_interval_s: float = Field(
        0.2,
        ge=0,
        description="how often a streamed reply is re-cleaned and handed to the platform",
        json_schema_extra=_group("serving"),
    )

    # Generation
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=2048,
        description="reply budget in tokens; unset: the model's (128); capped at half the context",
        json_schema_extra=_group("generation"),
    )
    generation_timeout_s: float = Field(
        120.0,
        gt=0,
        description="a reply still generating after this many seconds is stopped and sent",
        json_schema_extra=_group("generation"),
    )
    temperature: float | None = Field(
        None,
        ge=0,
        description="sampling temperature; unset: the model card's",
        json_schema_extra=_group("generation"),
    )
    top_p: float | None = Field(
        None,
        gt=0,
        le=1,
        description="nucleus sampling; unset: the model card's",
        json_schema_extra=_group("generation"),
    )
    top_k: int | None = Field(
        None,
        ge=0,
        description="top-k sampling; unset: the model card's",
        json_schema_extra=_group("generation"),
    )
    repetition_penalty: float | None = Field(
        None,
        gt=0,
        description="penalty on repeated tokens; unset: the model card's",
        json_schema_extra=_group("generation"),
    )

    # Conversations
    database_url: str = Field(
        "sqlite:///./data/bot.sqlite3",
        description="where conversations are kept: SQLite, or PostgreSQL for several processes",
        json_schema_extra=_group("conversations"),
    )
    max_message_chars: int = Field(
        4000,
        ge=1,
        description="longer messages are refused",
        json_schema_extra=_group("conversations"),
    )
    user_rate_limit_per_minute: int = Field(
        10,
        ge=0,
        description="messages a user may send per minute, 0 = no limit",
        json_schema_extra=_group("conversations"),
    )
    # /reset in a shared channel erases everyone's context: admins only unless this is off.
    reset_requires_admin: bool = Field(
        True,
        description="only admins may /reset a shared channel",
        json_schema_extra=_group("conversations"),
    )
    default_persona: str = Field(
        "",
        description="persona of channels that have not chosen one; empty: none",
        json_schema_extra=_group("conversations"),
    )
    persona_dir: Path = Field(
        Path("./data/personas"),
        description="your own persona files (and trained adapters)",
        json_schema_extra=_group("conversations"),
    )
    max_cached_adapters: int = Field(
        4,
        ge=1,
        description="LoRA persona adapters kept loaded at once",
        json_schema_extra=_group("conversations"),
    )

    # Console
    bot_name: str = Field(
        "ボット", description="the name shown before replies", json_schema_extra=_group("console")
    )
    console_channel: str = Field(
        "console",
        description="the console's conversation key, so several histories can coexist",
        json_schema_extra=_group("console"),
    )
    # The interactive console shows only warnings and errors, between replies, so that log
    # lines do not break into a reply being written.
    console_log_file: str = Field(
        "./data/console.log",
        description="every log line of the interactive console; empty: on the terminal",
        json_schema_extra=_group("console"),
    )

    # Discord (configured when DISCORD_TOKEN is set)
    discord_token: SecretStr | None = Field(
        None, description="the bot token; set: serve Discord", json_schema_extra=_group("discord")
    )
    discord_allow_dms: bool = Field(
        True, description="answer direct messages", json_schema_extra=_group("discord")
    )
    discord_message_content: bool = Field(
        False,
        description="the privileged intent, needed only to read every message in chat channels",
        json_schema_extra=_group("discord"),
    )
    # Global sync can take an hour.
    discord_command_guild_ids: IdList = Field(
        [],
        description="servers whose slash commands are synced at once",
        json_schema_extra=_group("discord"),
    )
    discord_guild_ids: IdList = Field(
        [], description="allowed servers; empty: all", json_schema_extra=_group("discord")
    )
    discord_channel_ids: IdList = Field(
        [], description="allowed channels; empty: all", json_schema_extra=_group("discord")
    )
    discord_role_ids: IdList = Field(
        [], description="allowed roles; empty: all", json_schema_extra=_group("discord")
    )
    discord_user_ids: IdList = Field(
        [], description="allowed users; empty: all", json_schema_extra=_group("discord")
    )
    discord_admin_role_ids: IdList = Field(
        [],
        description="admin roles, besides the Administrator permission",
        json_schema_extra=_group("discord"),
    )
    discord_admin_user_ids: IdList = Field(
        [],
        description="admin users, besides the Administrator permission",
        json_schema_extra=_group("discord"),
    )
    # Sharding (Discord requires it past 2,500 servers). Unset: one unsharded connection.
    shard_count: int | None = Field(
        None,
        ge=1,
        description="shards in all; unset: one unsharded connection",
        json_schema_extra=_group("discord"),
    )
    shard_ids: Annotated[list[int], NoDecode] = Field(
        [],
        description="the shards this process runs; empty: all",
        json_schema_extra=_group("discord"),
    )

    # Slack (configured when SLACK_BOT_TOKEN is set)
    slack_bot_token: SecretStr | None = Field(
        None,
        description="the bot token (xoxb-…); set: serve Slack",
        json_schema_extra=_group("slack"),
    )
    slack_app_token: SecretStr | None = Field(
        None,
        description="the app-level token (xapp-…) Socket Mode needs",
        json_schema_extra=_group("slack"),
    )
    slack_signing_secret: SecretStr | None = Field(
        None, description="the signing secret HTTP mode needs", json_schema_extra=_group("slack")
    )
    slack_mode: Literal["socket", "http"] = Field(
        "socket",
        description="Socket Mode or HTTP (the Events API)",
        json_schema_extra=_group("slack"),
    )
    slack_http_host: str = Field(
        "0.0.0.0",
        description="HTTP mode: the address to listen on",
        json_schema_extra=_group("slack"),
    )
    slack_http_port: int = Field(
        3000, description="HTTP mode: the port to listen on", json_schema_extra=_group("slack")
    )
    # Tests point it at a local fake.
    slack_api_url: str = Field(
        "https://slack.com/api/",
        description="the Web API's address; GovSlack's is https://slack-gov.com/api/",
        json_schema_extra=_group("slack"),
    )
    slack_admin_user_ids: IdList = Field(
        [], description="users allowed admin commands", json_schema_extra=_group("slack")
    )
    slack_workspace_admins_are_admins: bool = Field(
        True,
        description="workspace admins and owners may run admin commands",
        json_schema_extra=_group("slack"),
    )

    log_level: str = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR", json_schema_extra=_group("logging")
    )

    # Health and metrics over HTTP (/healthz, /metrics)
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port for /healthz and /metrics; unset: off",
        json_schema_extra=_group("health"),
    )
    health_host: str = Field(
        "127.0.0.1",
        description="address the health port listens on (0.0.0.0: other machines too)",
        json_schema_extra=_group("health"),
    )

    @field_validator(
        "discord_command_guild_ids",
        "discord_guild_ids",
        "discord_channel_ids",
        "discord_role_ids",
        "discord_user_ids",
        "discord_admin_role_ids",
        "discord_admin_user_ids",
        "slack_admin_user_ids",
        "shard_ids",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_shards(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the number of shards in all)")
        if self.shard_count is not None:
            wrong = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
            if wrong:
                raise ValueError(
                    f"SHARD_IDS {wrong} are outside 0..{self.shard_count - 1} (SHARD_COUNT)"
                )
        return self

    def configured_platforms(self) -> list[str]:
        platforms = []
        if self.discord_token:
            platforms.append("discord")
        if self.slack_bot_token:
            platforms.append("slack")
        return platforms


# --- `--help` ----------------------------------------------------------------------------------


def group_of(name: str) -> str:
    """The group that reads the field `name`."""
    extra = Settings.model_fields[name].json_schema_extra
    if not isinstance(extra, dict) or extra.get("group") not in GROUPS:
        raise ValueError(f"the setting {name} has no group (json_schema_extra=_group(...))")
    return str(extra["group"])


def fields_in(*groups: str) -> list[str]:
    """The fields of `groups`, in the model's order."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"not settings groups: {', '.join(sorted(unknown))}")
    return [name for name in Settings.model_fields if group_of(name) in groups]


def env_name(name: str) -> str:
    """The environment variable pydantic-settings reads the field `name` from."""
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def shown_default(field: FieldInfo) -> str:
    """The default as one would type it: lists comma-separated, None "unset", an empty value
    "empty"; a secret only says it is one."""
    if _is_secret(field):
        return "secret, default: unset" if field.default is None else "secret"
    value = field.default
    if value is None:
        return "default: unset"
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, list | tuple):
        value = ",".join(str(item) for item in value)
    return f"default: {str(value) or 'empty'}"


def settings_help(names: Iterable[str], width: int = 79) -> str:
    """`--help` lines for the fields `names`: under their group's heading, in GROUPS' order,
    `  NAME (default: X)  description` (`NAME (a | b; default: a)` for fixed choices), the
    description on the lines below when the line would be wider than `width`."""
    wanted = set(names)
    unknown = wanted - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"not settings: {', '.join(sorted(unknown))}")
    sections = []
    for group in GROUPS:
        lines = [f"{group} settings:"]
        for name in fields_in(group):
            if name in wanted:
                lines.append(_entry(name, width))
        if len(lines) > 1:
            sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _entry(name: str, width: int) -> str:
    field = Settings.model_fields[name]
    description = field.description or ""
    choices = " | ".join(_choices(field.annotation))
    head = f"  {env_name(name)} ({f'{choices}; ' if choices else ''}{shown_default(field)})"
    if len(f"{head}  {description}") <= width:
        return f"{head}  {description}"
    indent = " " * 6
    wrapped = textwrap.fill(description, width, initial_indent=indent, subsequent_indent=indent)
    return f"{head}\n{wrapped}"


def _choices(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(choice) for choice in get_args(annotation)]
    return []


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)
