"""Which tests are `slow`: the ones that wait on another process to start (a vLLM or
llama-cpp-python server, `python -m bot` as a subprocess or in a terminal, the engine benchmark's
processes, the PostgreSQL server). On a 2-core machine each such start costs 2-65 s, most
of them 10 s or more (Python, torch and transformers load again in the new process), and
together they took ~85% of the whole suite's time. Everything that runs in the pytest process
stays in the fast tier, whatever it wires together: the demo and scripted models, the tiny
family models, SQLite, the fake Discord and Slack servers, llama.cpp in process on a GGUF
converted for it, persona training on the demo model, the tiny channel benchmark. Each of those
took well under 5 s when measured. tests/README.md has the measured times.

tests/conftest.py applies `slow_reason()` to every collected item. A test is slow when it uses
one of SLOW_FIXTURES, is parametrized with one of SLOW_PARAMS, lives in one of SLOW_MODULES, or
is named in SLOW_TESTS (a test that starts its process inline, in a module of otherwise fast
tests). A new test that starts a process belongs in one of these tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Fixtures whose setup starts a process (they may be used through another fixture: pytest's
# `item.fixturenames` is the whole closure).
SLOW_FIXTURES: dict[str, str] = {
    # tests/engine_support.py: vLLM's OpenAI server (CPU build) once per session, ~50-65 s to start
    "vllm": "a vLLM server",
    # tests/integration/test_engines_pipeline.py: a vLLM server of the test's own, killed mid-reply
    "vllm_to_kill": "a vLLM server of its own",
    # tests/conftest.py: a PostgreSQL cluster (initdb, pg_ctl) once per session
    "postgres": "the PostgreSQL server",
    # tests/service: `python -m bot run` subprocesses (tests/service/bot_process.py), ~10 s each
    "bots": "bot subprocesses",
}

# (fixture, parameter) pairs: a parametrized fixture whose slow case reaches its process with
# `request.getfixturevalue`, so the process's fixture is not in `item.fixturenames`.
SLOW_PARAMS: dict[tuple[str, str], str] = {
    # The PostgreSQL run of a test that runs on both databases (BOTH_DATABASES,
    # RUN_ON_BOTH_DATABASES); its SQLite run stays in the fast tier.
    ("database_url", "postgresql"): "the PostgreSQL server",
    # tests/platforms/test_engines_platforms.py: ENGINE=openai against the session's vLLM
    ("engine_settings", "openai"): "a vLLM server",
}

# Modules in which every test starts a process.
SLOW_MODULES: dict[str, str] = {
    # Lines piped into `python -m bot console` subprocesses: 11-60 s a test
    "tests.integration.test_console": "console subprocesses",
    # `python -m bot console` in a real pseudo-terminal (tests/integration/terminal.py): 11-22 s
    "tests.integration.test_console_terminal": "a console in a terminal",
    # `python -m bot run` subprocesses against the fake Discord: 11-14 s a test
    "tests.platforms.test_bot_process": "bot subprocesses",
}

# Single tests ("module::function", all parametrizations) that start a process inline.
SLOW_TESTS: dict[str, str] = {
    # a vLLM server started with the persona's LoRA adapter: ~50 s
    "tests.integration.test_engines_pipeline::test_vllm_serves_a_persona_through_the_servers_lora_adapter": "a vLLM server of its own",
    # llama-cpp-python's own OpenAI-compatible server: ~3 s
    "tests.integration.test_engines_pipeline::test_a_server_that_takes_no_token_ids_gets_text_and_says_so": "a llama-cpp-python server",
    # each engine benchmarked in a process of its own: ~55 s
    "tests.integration.test_bench::test_the_engine_benchmark_measures_each_engine_in_a_process_of_its_own": "the engine benchmark's processes",
    # `python -m bot console` subprocesses: ~11-12 s each (~2 s on llama.cpp)
    "tests.integration.test_hostile_text::test_console_survives_invalid_bytes_under_a_strict_utf8_locale": "a console subprocess",
    "tests.integration.test_gptsan_chat::test_console_chats_with_clean_replies": "a console subprocess",
    "tests.integration.test_engines_pipeline::test_console_answers_on_llamacpp": "a console subprocess",
    "tests.service.test_health::test_the_console_is_healthy_with_a_platform_token_in_the_environment": "a console subprocess",
    # `python -m bot console` and `python -m bot run` stopping at start-up: ~2 s each
    "tests.service.test_health::test_a_busy_health_port_stops_start_up_with_one_error_line": "bot subprocesses",
}


def _key(item: pytest.Item) -> tuple[str, str]:
    module = getattr(getattr(item, "module", None), "__name__", "")
    return module, getattr(item, "originalname", item.name)


def slow_reason(item: pytest.Item) -> str | None:
    """What makes `item` slow, or None when it belongs in the fast tier."""
    for name in getattr(item, "fixturenames", ()):
        if name in SLOW_FIXTURES:
            return f"{SLOW_FIXTURES[name]} (fixture {name})"
    params = getattr(getattr(item, "callspec", None), "params", {})
    for (name, value), reason in SLOW_PARAMS.items():
        if params.get(name) == value:
            return f"{reason} ({name}={value})"
    module, function = _key(item)
    if module in SLOW_MODULES:
        return SLOW_MODULES[module]
    return SLOW_TESTS.get(f"{module}::{function}")


def check_tables(root: Path, items: list[pytest.Item]) -> None:
    """Fail the run when a table names a module that no longer exists, or a test its collected
    module no longer has: a renamed test would otherwise move to the fast tier unnoticed."""
    errors = []
    named = [(name, "SLOW_MODULES") for name in SLOW_MODULES]
    named += [(entry.split("::")[0], "SLOW_TESTS") for entry in SLOW_TESTS]
    for module, table in named:
        if not (root / (module.replace(".", "/") + ".py")).is_file():
            errors.append(f"{table} names {module}, which is not a file under {root}")
    modules = {
        item.module.__name__: item.module
        for item in items
        if getattr(item, "module", None) is not None
    }
    for entry in SLOW_TESTS:
        module, function = entry.split("::")
        if module in modules and not hasattr(modules[module], function):
            errors.append(f"SLOW_TESTS names {entry}, which its module does not define")
    if errors:
        raise pytest.UsageError("tests/tiers.py is out of date:\n  " + "\n  ".join(errors))
