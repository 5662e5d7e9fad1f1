"""The README's promise, run as a newcomer would: lines piped into `python -m bot console`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_console(tmp_path: Path, model_cache: Path, lines: list[str], **env: str):
    environment = {
        **os.environ,
        "MODEL": "demo",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "MODEL_CACHE_DIR": str(model_cache),
        "LOG_LEVEL": "INFO",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "bot", "console"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=180,
    )


def test_three_lines_get_three_clean_replies_and_history_continues(tmp_path, model_cache):
    first = run_console(
        tmp_path, model_cache, ["こんにちは", "今日は何をしますか？", "ありがとう！"]
    )
    assert first.returncode == 0, first.stderr
    replies = first.stdout.splitlines()
    assert len(replies) == 3
    for reply in replies:
        assert reply.strip()
        for junk in ("<NL>", "</s>", "ユーザー:"):
            assert junk not in reply
    assert "デモモデル" in first.stderr
    assert first.stderr.count("bot.replies: reply conversation=console:local/console") == 3
    assert "turns=1 " in first.stderr and "turns=5 " in first.stderr

    second = run_console(tmp_path, model_cache, ["続きです", "/reset", "新しい話"])
    assert second.returncode == 0, second.stderr
    assert len(second.stdout.splitlines()) == 3
    assert "リセット" in second.stdout.splitlines()[1]
    turns = [
        line.split("turns=")[1].split()[0]
        for line in second.stderr.splitlines()
        if "bot.replies" in line
    ]
    assert turns == ["7", "1"]  # continued the stored history, then started afresh


def test_a_hub_id_without_network_fails_with_a_clear_message(tmp_path, model_cache):
    result = run_console(
        tmp_path,
        model_cache,
        ["こんにちは"],
        MODEL="rinna/japanese-gpt-neox-3.6b-instruction-ppo",
        HF_HUB_OFFLINE="1",
    )
    assert result.returncode == 2
    assert "MODEL=demo" in result.stderr and "パス" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_never_reach_the_log(tmp_path, model_cache):
    result = run_console(
        tmp_path,
        model_cache,
        ["/status"],
        HF_TOKEN="hf_supersecret123",
        SLACK_SIGNING_SECRET="sig-secret-456",
    )
    assert result.returncode == 0
    assert "supersecret" not in result.stdout + result.stderr
    assert "sig-secret" not in result.stdout + result.stderr
