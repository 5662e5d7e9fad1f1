"""Each verb's `--help` lists the settings it reads, made from the settings model itself:
the environment variable, its default as one would type it, and what it does."""

from __future__ import annotations

import re

import pytest

from bot.app.settings import Settings, env_name, shown_default
from bot.cli import main

FIELDS = Settings.model_fields


def help_of(verb: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([verb, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def entry(text: str, name: str) -> str:
    """The help entry of the setting `name`: its line and the description's lines below it."""
    found = re.search(rf"^  {env_name(name)} \(.*\n(?:      .*\n)*", text, re.MULTILINE)
    assert found, f"{env_name(name)} is not listed"
    return found.group()


def listed(text: str) -> set[str]:
    return {name for name in FIELDS if re.search(rf"^  {env_name(name)} \(", text, re.MULTILINE)}


def test_console_help_lists_its_settings_with_their_real_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_of("console", capsys)
    for name in ("model", "engine", "max_batch_size", "database_url", "console_log_file"):
        assert f"default: {FIELDS[name].default}" in entry(text, name)
    assert FIELDS["max_batch_size"].description in entry(text, "max_batch_size")
    # Fixed choices come from the type: ENGINE lists every engine.
    assert "transformers | llamacpp | openai" in entry(text, "engine")
    assert "environment or .env" in text and ".env.example" in text
    # The console serves no platform: their tokens are not its settings.
    assert not listed(text) & {"discord_token", "slack_bot_token", "slack_mode"}


def test_run_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    """A new field in Settings appears in `run --help` (it needs a description and a group)."""
    text = help_of("run", capsys)
    assert listed(text) == set(FIELDS)
    for name, field in FIELDS.items():
        assert field.description, f"{name} has no description"
        assert field.description in " ".join(entry(text, name).split())


def test_secrets_show_no_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-token-value")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-slack-token-value")
    text = help_of("run", capsys)
    for name in ("discord_token", "slack_bot_token"):
        assert re.match(rf"  {env_name(name)} \(secret, default: unset\)", entry(text, name))
    assert "token-value" not in text


def test_db_help_lists_database_url_only_with_logging(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of("db", capsys)
    assert f"default: {FIELDS['database_url'].default}" in entry(text, "database_url")
    assert listed(text) == {"database_url", "log_level"}
    assert "{upgrade}" in text  # its argument is still there


def test_convert_help_lists_what_loading_a_model_reads(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_of("convert", capsys)
    assert {"model_cache_dir", "prompt_format", "hf_token"} <= listed(text)
    assert "--quant" in text


def test_models_lists_no_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert listed(help_of("models", capsys)) == set()


def test_defaults_read_as_one_would_type_them() -> None:
    assert shown_default(FIELDS["discord_guild_ids"]) == "default: empty"
    assert shown_default(FIELDS["max_new_tokens"]) == "default: unset"
    assert shown_default(FIELDS["reset_requires_admin"]) == "default: true"
    assert shown_default(FIELDS["generation_timeout_s"]) == "default: 120"
    assert (
        shown_default(FIELDS["model_cache_dir"]) == f"default: {FIELDS['model_cache_dir'].default}"
    )
    assert shown_default(FIELDS["hf_token"]) == "secret, default: unset"


def test_the_listed_names_are_the_ones_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env_name("max_queue"), "7")
    monkeypatch.setenv(env_name("discord_guild_ids"), "1, 2")
    settings = Settings(_env_file=None)
    assert settings.max_queue == 7
    assert settings.discord_guild_ids == ["1", "2"]


def test_settings_lines_fit_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    settings_part = help_of("run", capsys).split(".env.example", 1)[1]
    assert max(len(line) for line in settings_part.splitlines()) <= 79
