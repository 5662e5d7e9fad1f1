"""`ENGINE=llamacpp`: GGUF models through llama-cpp-python, in this process.

All rows of a batch are generated together in llama.cpp's multi-sequence batch: one sequence
id per row, every row's prompt prefilled in shared decode calls, then one token per live row
per step. So channels are served side by side (aggregate throughput grows with rows), not one
after another. The bot samples each row from llama.cpp's logits itself (`bot.engines.logits`):
per-row temperature, top-p, top-k and repetition penalty, exactly as on the other engines.

The bot's own tokenizer (copied beside the GGUF by `python -m bot convert`) builds the prompt
ids and decodes the output. A GGUF without those files (downloaded elsewhere) falls back to the
vocabulary inside the GGUF, and the log and /status say so.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.engines.contract import EngineInfo, LoadedModel, LoadOptions
from bot.engines.llamacpp.convert import QUANTS, SOURCE_FILE, converted_folder, gguf_path
from bot.engines.logits import sample_token
from bot.engines.token_engine import RowEnd, RowRequest, RowSink, TokenEngine
from bot.errors import GenerationFailed, ModelLoadError
from bot.models.facts import bare_facts, context_length, folder_facts, recorded_facts
from bot.models.files import read_json
from bot.models.sampling import SamplingParams
from bot.models.tokenizers import SENTENCEPIECE_FILES, Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[llamacpp]'"
GGUF_TOKENIZER_NOTE = "GGUF 内の語彙を使用（変換元のトークナイザーのファイルがありません）"
ADAPTER_REFUSED = (
    "ペルソナ「{name}」の LoRA アダプターは llama.cpp エンジンでは使えません。"
    "ENGINE=transformers で使うか、アダプターのないペルソナを選んでください。"
)


@dataclass
class LlamaCppOptions:
    n_gpu_layers: int = 0  # layers offloaded to a GPU (-1: all); needs a CUDA/Metal build
    n_threads: int = 0  # 0: every core
    max_rows: int = 8  # sequences generated at once (the worker's MAX_BATCH_SIZE)
    n_batch: int = 512  # prompt tokens per decode call
    seed: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class LlamaHandle:
    """The engine's handle in `LoadedModel.model`."""

    model: Any  # llama_cpp._internals.LlamaModel
    context: Any  # llama_cpp._internals.LlamaContext
    batch: Any  # llama_cpp.llama_batch
    n_vocab: int
    n_ctx: int
    path: Path
    own_tokenizer: bool
    threads: int
    gpu_layers: int
    size_bytes: int
    rng: np.random.Generator
    llama_cpp: Any

    def close(self) -> None:
        if self.batch is not None:
            self.llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        self.context.close()
        self.model.close()


class GGUFTokenizer:
    """The vocabulary inside a GGUF, for files converted elsewhere (no tokenizer files)."""

    def __init__(self, llama_cpp: Any, model: Any) -> None:
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(model.model)
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        pad = llama_cpp.llama_vocab_pad(self._vocab)
        self.eos_id: int | None = eos if eos >= 0 else None
        self.bos_id: int | None = bos if bos >= 0 else None
        self.pad_id: int | None = pad if pad >= 0 else self.eos_id

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 16
        out = (self._lib.llama_token * size)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), out, size, False, False)
        return list(out[:n])

    def decode(self, ids: list[int]) -> str:
        pieces = bytearray()
        buffer = ctypes.create_string_buffer(256)
        for token in ids:
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, 256, 0, False)
            pieces += buffer.raw[: max(n, 0)]
        return pieces.decode("utf-8", errors="replace")

    def has_piece(self, piece: str) -> bool:
        ids = self.encode(piece)
        return len(ids) == 1


def find_gguf(spec: str, options: LoadOptions) -> Path:
    """`MODEL` as a GGUF file: a path to one, a folder holding one, or the name a model was
    converted under (`python -m bot convert NAME`), preferring q4_k_m, then q8_0, then f16."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    folders = [path] if path.is_dir() else []
    folders.append(converted_folder(options.cache_dir, spec))
    for folder in folders:
        for quant in reversed(QUANTS):
            candidate = gguf_path(options.cache_dir, spec, quant)
            if folder == path:
                candidate = next(iter(sorted(folder.glob(f"*-{quant}.gguf"))), candidate)
            if candidate.is_file():
                return candidate
        others = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
        if others:
            return others[0]
    raise ModelLoadError(
        f"GGUF のモデル「{spec}」が見つかりません。.gguf ファイルのパスを指定するか、"
        f"先に python -m bot convert {spec} --to gguf --quant q4_k_m で変換してください。"
    )


class LlamaCppEngine(TokenEngine):
    name = "llamacpp"
    model_hint = ".gguf ファイルのパス、または python -m bot convert で変換したモデルの名前"

    def __init__(self, options: LlamaCppOptions) -> None:
        self.options = options

    def load(self, spec: str) -> LoadedModel:
        from bot.engines.contract import require_engine_package

        llama_cpp = require_engine_package("llama_cpp", INSTALL_HINT)
        from llama_cpp import _internals

        # llama.cpp prints every load detail to stderr unless told otherwise.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        path = find_gguf(spec, self.options.load)
        folder = path.parent
        facts_file = read_json(folder / SOURCE_FILE)
        own = (folder / "tokenizer.json").exists() or any(
            (folder / n).exists() for n in SENTENCEPIECE_FILES
        )
        threads = self.options.n_threads or os.cpu_count() or 1
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = self.options.n_gpu_layers
        try:
            model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(
                f"GGUF ファイル {path.name} を読み込めませんでした（壊れているか、"
                "この llama.cpp が対応していない形式です）。",
                detail=str(exc),
            ) from exc
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(model.model)
        tokenizer: Tokenizer
        if own:
            tokenizer = load_tokenizer(folder)
        else:
            tokenizer = GGUFTokenizer(llama_cpp, model)
            log.warning("%s has no tokenizer files beside it: %s", path.name, GGUF_TOKENIZER_NOTE)
        setting = self.options.load.prompt_format
        if facts_file:
            facts = recorded_facts(facts_file, tokenizer, setting)
        elif own:
            facts = folder_facts(spec, folder, tokenizer, setting)
        else:
            facts = bare_facts(tokenizer, setting)
        # The card's context length, never past what the weights have positions for.
        n_ctx = context_length(facts.context_length, n_ctx_train)
        rows = max(1, self.options.max_rows)
        ctx_params = llama_cpp.llama_context_default_params()
        # One KV cache shared by all rows (kv_unified): any row may use up to the model's
        # whole context while the batch as a whole fits rows x context.
        ctx_params.n_ctx = n_ctx * rows
        ctx_params.n_batch = self.options.n_batch
        ctx_params.n_ubatch = self.options.n_batch
        ctx_params.n_seq_max = rows
        ctx_params.kv_unified = True
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        try:
            context = _internals.LlamaContext(model=model, params=ctx_params, verbose=False)
        except ValueError as exc:
            model.close()
            raise ModelLoadError(
                "llama.cpp のコンテキストを作れませんでした（メモリ不足の可能性があります）。"
                "MAX_BATCH_SIZE を小さくしてください。",
                detail=str(exc),
            ) from exc
        vocab = llama_cpp.llama_model_get_vocab(model.model)
        handle = LlamaHandle(
            model=model,
            context=context,
            batch=llama_cpp.llama_batch_init(self.options.n_batch, 0, 1),
            n_vocab=llama_cpp.llama_vocab_n_tokens(vocab),
            n_ctx=ctx_params.n_ctx,
            path=path,
            own_tokenizer=own,
            threads=threads,
            gpu_layers=self.options.n_gpu_layers,
            size_bytes=path.stat().st_size,
            rng=np.random.default_rng(self.options.seed),
            llama_cpp=llama_cpp,
        )
        quant = _quant_of(path)
        # K and V in f16 for every layer and position (GPTNeoX and GPT-2 have one KV head per
        # query head).
        layers = llama_cpp.llama_model_n_layer(model.model)
        kv_bytes = 2 * layers * llama_cpp.llama_model_n_embd(model.model) * 2 * ctx_params.n_ctx
        log.info(
            "llama.cpp: %s (%s, %.2f GB), %d threads, %d GPU layers, %d rows, "
            "KV cache %d tokens (%.2f GB)",
            path.name,
            quant,
            handle.size_bytes / 1e9,
            threads,
            self.options.n_gpu_layers,
            rows,
            ctx_params.n_ctx,
            kv_bytes / 1e9,
        )
        return LoadedModel(
            name=spec,
            folder=folder,
            model=handle,
            tokenizer=tokenizer,
            prompt_format=facts.prompt_format,
            context_length=n_ctx,
            device="cuda" if self.options.n_gpu_layers else "cpu",
            dtype=quant,
            is_demo=facts.is_demo,
            parameters=int(llama_cpp.llama_model_n_params(model.model)),
            sampling_defaults=facts.sampling_defaults,
            quantization=quant,
            format_reason=facts.reason,
        )

    def release(self, model: LoadedModel) -> None:
        handle = model.model
        if isinstance(handle, LlamaHandle):
            handle.close()
        model.model = None

    def info(self, model: LoadedModel) -> EngineInfo:
        handle: LlamaHandle = model.model
        note = "" if handle.own_tokenizer else GGUF_TOKENIZER_NOTE
        detail = (
            f"GGUF {handle.path.name}（{handle.size_bytes / 1e9:.2f} GB）、"
            f"スレッド {handle.threads}、GPU 層 {handle.gpu_layers}"
        )
        return EngineInfo(self.name, detail, note)

    def adapter_refusal(self, adapter: str) -> str:
        return ADAPTER_REFUSED.format(name=adapter)

    # --- generating ------------------------------------------------------------------------

    def generate_ids(
        self, model: LoadedModel, rows: Sequence[RowRequest], sink: RowSink
    ) -> list[RowEnd]:
        handle: LlamaHandle = model.model
        return _Batch(handle, rows, sink).run()


def prompt_logits(model: LoadedModel, ids: Sequence[int]) -> np.ndarray:
    """llama.cpp's logits at every position of `ids` (rows: positions), for checking a
    conversion against the original model."""
    handle: LlamaHandle = model.model
    batch = _Batch(handle, [RowRequest(list(ids), SamplingParams())], _NoSink())
    handle.llama_cpp.llama_memory_clear(batch.memory, True)
    out = []
    try:
        for start in range(0, len(ids), handle.context.params.n_batch):
            chunk = ids[start : start + handle.context.params.n_batch]
            entries = [(t, start + k, 0, True) for k, t in enumerate(chunk)]
            batch._decode(entries)
            out += [batch._logits(k).copy() for k in range(len(chunk))]
    finally:
        handle.llama_cpp.llama_memory_clear(batch.memory, True)
    return np.stack(out)


class _NoSink:
    def token(self, row: int, token_id: int) -> bool:
        return False

    def text(self, row: int, text: str) -> bool:
        return False

    def done(self, row: int) -> bool:
        return False


class _Batch:
    """One batch of rows on llama.cpp's multi-sequence KV cache; row i is sequence i."""

    def __init__(self, handle: LlamaHandle, rows: Sequence[RowRequest], sink: RowSink) -> None:
        self.h = handle
        self.lib = handle.llama_cpp
        self.ctx = handle.context.ctx
        self.memory = handle.context.memory
        self.rows = rows
        self.sink = sink
        self.outcomes: list[RowEnd | None] = [None] * len(rows)
        self.seen = [list(r.ids) for r in rows]  # prompt + generated, for repetition penalty
        self.generated = [0] * len(rows)

    def run(self) -> list[RowEnd]:
        if len(self.rows) > self.h.context.params.n_seq_max:
            raise RuntimeError(
                f"{len(self.rows)} rows > n_seq_max {self.h.context.params.n_seq_max}"
            )
        self.lib.llama_memory_clear(self.memory, True)
        for i, row in enumerate(self.rows):
            if row.adapter:
                self.outcomes[i] = RowEnd(
                    "error", GenerationFailed(ADAPTER_REFUSED.format(name=row.adapter))
                )
            elif not row.ids:
                self.outcomes[i] = RowEnd("error", GenerationFailed("空のプロンプトです。"))
        try:
            pending = self._prefill()
            while pending:
                pending = self._step(pending)
        finally:
            self.lib.llama_memory_clear(self.memory, True)
        return [o or RowEnd("stopped") for o in self.outcomes]

    def _live(self, i: int) -> bool:
        if self.outcomes[i] is not None:
            return False
        if self.sink.done(i):
            self.outcomes[i] = RowEnd("stopped")
            return False
        return True

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> dict[int, int]:
        """Decode (token, position, sequence, wants logits) entries; returns sequence -> batch
        index of its logits. Raises on a llama.cpp error (out of KV space, say)."""
        batch = self.h.batch
        batch.n_tokens = len(entries)
        wanted = {}
        for j, (token, pos, seq, logits) in enumerate(entries):
            batch.token[j] = token
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = logits
            if logits:
                wanted[seq] = j
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        return wanted

    def _logits(self, index: int) -> np.ndarray:
        pointer = self.lib.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.h.n_vocab,))

    def _sample(self, i: int, index: int) -> int | None:
        """Sample row i's next token and hand it to the sink; None when the row ended."""
        try:
            token = sample_token(self._logits(index), self.seen[i], self.rows[i].params, self.h.rng)
        except Exception as exc:  # this row's failure only
            self.outcomes[i] = RowEnd("error", exc)
            return None
        self.generated[i] += 1
        if token in self.rows[i].stop_ids:
            self.outcomes[i] = RowEnd("eos")
            return None
        self.seen[i].append(token)
        if not self.sink.token(i, token):
            self.outcomes[i] = RowEnd("stopped")
            return None
        if self.generated[i] >= self.rows[i].params.max_new_tokens:
            self.outcomes[i] = RowEnd("length")
            return None
        return token

    def _prefill(self) -> dict[int, int]:
        """Every row's prompt, packed into decode calls of up to n_batch tokens; returns each
        live row's first new token."""
        size = self.h.context.params.n_batch
        entries: list[tuple[int, int, int, bool]] = []
        pending: dict[int, int] = {}

        def flush() -> None:
            if not entries:
                return
            wanted = self._decode(entries)
            entries.clear()
            for seq, index in wanted.items():
                if self._live(seq):
                    token = self._sample(seq, index)
                    if token is not None:
                        pending[seq] = token

        for i, row in enumerate(self.rows):
            if not self._live(i):
                continue
            for pos, token in enumerate(row.ids):
                entries.append((token, pos, i, pos == len(row.ids) - 1))
                if len(entries) == size:
                    flush()
        flush()
        return pending

    def _step(self, pending: dict[int, int]) -> dict[int, int]:
        """Feed each live row its last token and sample the next one."""
        entries = []
        for i, token in pending.items():
            if self._live(i):
                entries.append((token, len(self.seen[i]) - 1, i, True))
            else:
                self.lib.llama_memory_seq_rm(self.memory, i, -1, -1)
        if not entries:
            return {}
        wanted = self._decode(entries)
        following = {}
        for seq, index in wanted.items():
            token = self._sample(seq, index)
            if token is None:
                self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
            else:
                following[seq] = token
        return following


def _quant_of(path: Path) -> str:
    stem = path.stem.lower()
    return next((q for q in QUANTS if stem.endswith(q)), "gguf")
