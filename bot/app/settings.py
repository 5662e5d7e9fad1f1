"""The one reader of the environment: every knob the bot has, read from env vars and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PromptFormatName = Literal["auto", "rinna", "line", "plain", "gptsan"]  # prompt_format.FORMATS
# Comma-separated ids in the environment ("123,456"), a list in code.
IdList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every key is documented in `.env.example`. Secrets are `SecretStr` and never logged."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Engine: what generates (see README "Engines")
    engine: Literal["transformers", "llamacpp", "openai"] = "transformers"
    n_gpu_layers: int = Field(0, ge=-1)  # llamacpp: layers offloaded to a GPU, -1 = all
    n_threads: int = Field(0, ge=0)  # llamacpp: CPU threads, 0 = every core
    openai_base_url: str = "http://127.0.0.1:8000/v1"  # openai: the server, up to /v1
    openai_api_key: SecretStr | None = None
    openai_tokenizer: str = ""  # openai: folder/hub id of the served model's tokenizer

    # Model
    model: str = "rinna/japanese-gpt-neox-3.6b-instruction-ppo"
    prompt_format: PromptFormatName = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    quantization: Literal["none", "8bit", "4bit"] = "none"
    model_cache_dir: Path = Path("./data/models")
    hf_token: SecretStr | None = None

    # Serving
    max_batch_size: int = Field(8, ge=1, le=256)  # requests generated together
    # The longest a starting batch waits for requests still being prepared (a burst of
    # channels); a lone request never waits.
    batch_window_ms: float = Field(250, ge=0, le=60000)
    max_queue: int = Field(64, ge=1)  # waiting requests before "busy" answers
    idle_unload_minutes: float = Field(0, ge=0)  # free the model after this idle time; 0 = never

    # On SIGTERM or Ctrl-C, how long replies in progress may take to finish before they are
    # stopped (a second signal stops them at once).
    shutdown_grace_seconds: float = Field(20, ge=0)

    # How often a streamed reply is re-cleaned and handed to the platform (seconds).
    stream_update_interval_s: float = Field(0.2, ge=0)

    # Generation
    # None: the model's own default (128); capped at half the model's context.
    max_new_tokens: int | None = Field(None, ge=1, le=2048)
    generation_timeout_s: float = Field(120.0, gt=0)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)

    # Conversations
    database_url: str = "sqlite:///./data/bot.sqlite3"
    max_message_chars: int = Field(4000, ge=1)
    user_rate_limit_per_minute: int = Field(10, ge=0)  # 0 turns the limit off
    # /reset in a shared channel erases everyone's context: admins only unless this is off.
    reset_requires_admin: bool = True
    default_persona: str = ""
    persona_dir: Path = Path("./data/personas")  # your own persona files (and trained adapters)
    max_cached_adapters: int = Field(4, ge=1)  # LoRA adapters kept loaded at once
    bot_name: str = "ボット"

    # Console
    console_channel: str = "console"
    # The interactive console shows only warnings and errors, between replies; every log line
    # (LOG_LEVEL) goes to this file. Empty: all log lines on the terminal, between replies.
    console_log_file: str = "./data/console.log"

    # Discord (configured when DISCORD_TOKEN is set)
    discord_token: SecretStr | None = None
    discord_allow_dms: bool = True
    discord_message_content: bool = False  # the privileged intent; see README
    discord_command_guild_ids: IdList = []  # sync slash commands to these guilds at once
    discord_guild_ids: IdList = []  # allow-lists: empty allows all
    discord_channel_ids: IdList = []
    discord_role_ids: IdList = []
    discord_user_ids: IdList = []
    discord_admin_role_ids: IdList = []
    discord_admin_user_ids: IdList = []
    # Sharding (Discord requires it past 2,500 servers): SHARD_COUNT shards in all, and the
    # SHARD_IDS this process runs (empty: all of them). Unset: one unsharded connection.
    shard_count: int | None = Field(None, ge=1)
    shard_ids: Annotated[list[int], NoDecode] = []

    # Slack (configured when SLACK_BOT_TOKEN is set)
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None  # Socket Mode
    slack_signing_secret: SecretStr | None = None  # HTTP mode
    slack_mode: Literal["socket", "http"] = "socket"
    slack_http_host: str = "0.0.0.0"
    slack_http_port: int = 3000
    # The Web API's address: GovSlack's is https://slack-gov.com/api/ (tests use a local fake).
    slack_api_url: str = "https://slack.com/api/"
    slack_admin_user_ids: IdList = []
    slack_workspace_admins_are_admins: bool = True

    log_level: str = "INFO"

    # Health and metrics over HTTP (/healthz, /metrics): off unless a port is set.
    health_port: int | None = Field(None, ge=0, le=65535)
    health_host: str = "127.0.0.1"

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
