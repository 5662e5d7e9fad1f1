"""The one reader of the environment: every knob the bot has, read from env vars and `.env`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PromptFormatName = Literal["auto", "rinna", "line", "plain"]


class Settings(BaseSettings):
    """Every key is documented in `.env.example`. Secrets are `SecretStr` and never logged."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Model
    model: str = "rinna/japanese-gpt-neox-3.6b-instruction-ppo"
    prompt_format: PromptFormatName = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"
    model_cache_dir: Path = Path("./data/models")
    hf_token: SecretStr | None = None

    # Generation
    max_new_tokens: int = Field(128, ge=1, le=2048)
    generation_timeout_s: float = Field(120.0, gt=0)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)

    # Conversations
    database_url: str = "sqlite:///./data/bot.sqlite3"
    max_message_chars: int = Field(4000, ge=1)
    default_persona: str = ""
    bot_name: str = "ボット"

    # Console
    console_channel: str = "console"

    # Platforms (the adapters read these; empty means "not configured")
    discord_token: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None

    log_level: str = "INFO"

    def configured_platforms(self) -> list[str]:
        platforms = []
        if self.discord_token:
            platforms.append("discord")
        if self.slack_bot_token:
            platforms.append("slack")
        return platforms
