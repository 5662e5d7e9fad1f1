"""The README's promise, run as a newcomer would: lines piped into `python -m bot console`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_console(tmp_path: Path, model_cache: Path, lines: list[str], **env: str):
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, not whichever one the venv has installed
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


def test_scripted_use_is_never_rate_limited(tmp_path, model_cache):
    """The console's user owns the machine: a script may send as many lines as it likes."""
    lines = [f"{n}番目の質問です" for n in range(15)]
    result = run_console(
        tmp_path, model_cache, lines, USER_RATE_LIMIT_PER_MINUTE="10", MAX_NEW_TOKENS="4"
    )
    assert result.returncode == 0, result.stderr
    replies = result.stdout.splitlines()
    assert len(replies) == 15
    assert not [reply for reply in replies if "ペースが速い" in reply]


def test_sigterm_while_waiting_for_input_stops_cleanly(tmp_path, model_cache):
    """What systemd or Docker sends to a console bot fed by a pipe that stays open."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MODEL": "demo",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.sqlite3'}",
        "MODEL_CACHE_DIR": str(model_cache),
        "MAX_NEW_TOKENS": "8",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=tmp_path,
    )
    try:
        process.stdin.write("こんにちは\n")
        process.stdin.flush()
        assert process.stdout.readline().strip()  # answered; now it waits for the next line
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
    finally:
        process.kill()
        _, stderr = process.communicate()
    assert returncode == 0, stderr
    assert "SIGTERM" in stderr and "shut down cleanly" in stderr
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr
