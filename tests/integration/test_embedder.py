"""The int8 ONNX embedder against the torch model it was exported from, and its cache.

Each test module exports the real packaged model once into a private cache (a few
seconds). The bounds below were measured on these prompts: cosine to torch min
0.990, mean 0.994 (per-tensor int8 scales gave min 0.93, which is why the export
uses per-channel ones), and the committed head's verdicts agreed on 185 of 185
dev prompts.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from speech2image.config import ModerationConfig
from speech2image.moderation import embedder
from speech2image.moderation.embedder import (
    DIGEST_FILE,
    MAX_TOKENS,
    MODEL_FILE,
    OnnxEmbedder,
    TorchEmbedder,
    embedding_model_dir,
    encode_batch,
    load_tokenizer,
    prepare_embedder,
    read_verified,
)
from speech2image.moderation.semantic import SemanticModerator

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEV = Path(__file__).parents[1] / "data" / "moderation" / "dev.tsv"
MIN_COSINE = 0.98
MEAN_COSINE = 0.99
MIN_VERDICT_AGREEMENT = 0.98


def dev_prompts() -> list[str]:
    with DEV.open(encoding="utf-8") as handle:
        return [r["text"] for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def varied_prompts() -> list[str]:
    """Every third dev prompt (toxic and benign, short and long), and one over 64 tokens."""
    prompts = dev_prompts()
    return [*prompts[::3][:50], " and ".join(prompts[:12])]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedder-cache")


@pytest.fixture(scope="module")
def onnx(cache_root: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_root=cache_root)


@pytest.fixture(scope="module")
def reference() -> TorchEmbedder:
    return TorchEmbedder()


def test_int8_embeddings_match_the_torch_model(
    onnx: OnnxEmbedder, reference: TorchEmbedder
) -> None:
    prompts = varied_prompts()
    assert len(load_tokenizer(embedding_model_dir()).encode(prompts[-1]).ids) == MAX_TOKENS
    cosine = (onnx.embed(prompts) * reference.embed(prompts)).sum(axis=1)
    assert cosine.min() >= MIN_COSINE, prompts[int(cosine.argmin())]
    assert cosine.mean() >= MEAN_COSINE


def test_rows_are_unit_length_float32(onnx: OnnxEmbedder) -> None:
    rows = onnx.embed(varied_prompts())
    assert rows.dtype == np.float32
    assert rows.shape == (51, 384)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert onnx.embed([]).shape == (0, 384)


def test_a_batch_gives_the_same_rows_as_one_at_a_time(onnx: OnnxEmbedder) -> None:
    prompts = varied_prompts()
    alone = np.concatenate([onnx.embed([prompt]) for prompt in prompts])
    np.testing.assert_allclose(onnx.embed(prompts), alone, atol=1e-5)


def test_the_tokenizer_gives_transformers_ids() -> None:
    from transformers import AutoTokenizer

    folder = embedding_model_dir()
    theirs = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ours = load_tokenizer(folder)
    for prompt in [*dev_prompts(), " and ".join(dev_prompts()[:12])]:
        expected = theirs(prompt, truncation=True, max_length=MAX_TOKENS)["input_ids"]
        assert encode_batch(ours, [prompt])["input_ids"][0].tolist() == expected, prompt


def test_the_export_leaves_only_the_model_and_its_digest(
    onnx: OnnxEmbedder, cache_root: Path
) -> None:
    folder = onnx.onnx_dir
    assert sorted(p.name for p in cache_root.iterdir()) == [folder.name, f"{folder.name}.lock"]
    assert sorted(p.name for p in folder.iterdir()) == [MODEL_FILE, DIGEST_FILE]
    data = read_verified(folder)
    assert data is not None
    assert 15e6 < len(data) < 30e6  # int8 weights: a quarter of the 90 MB float32 ones


def no_export(model_dir: Path, out: Path, work: Path) -> None:
    raise AssertionError("exported again although the cache was valid")


def test_a_second_embedder_reuses_the_cache(
    onnx: OnnxEmbedder, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedder, "export_int8", no_export)
    again = OnnxEmbedder(cache_root=cache_root)
    prompts = varied_prompts()[:5]
    np.testing.assert_array_equal(again.embed(prompts), onnx.embed(prompts))


def test_prepare_embedder_finds_it_prepared(
    onnx: OnnxEmbedder, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedder, "export_int8", no_export)
    said: list[str] = []
    assert prepare_embedder(said.append, cache_root) == onnx.onnx_dir
    assert said == [f"moderation model: already prepared for ONNX Runtime in {onnx.onnx_dir}"]


def truncate(model: Path) -> None:
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def flip_a_byte(model: Path) -> None:
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte])
def test_a_damaged_cached_model_is_rebuilt(
    onnx: OnnxEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[Path], None],
) -> None:
    shutil.copytree(onnx.onnx_dir, tmp_path / onnx.onnx_dir.name)
    damage(tmp_path / onnx.onnx_dir.name / MODEL_FILE)
    exports: list[Path] = []
    real_export = embedder.export_int8

    def counted(model_dir: Path, out: Path, work: Path) -> None:
        exports.append(out)
        real_export(model_dir, out, work)

    monkeypatch.setattr(embedder, "export_int8", counted)
    rebuilt = OnnxEmbedder(cache_root=tmp_path)
    assert len(exports) == 1
    assert read_verified(rebuilt.onnx_dir) is not None
    prompts = varied_prompts()[:5]
    np.testing.assert_allclose(rebuilt.embed(prompts), onnx.embed(prompts), atol=1e-5)


def test_no_torch_or_transformers_at_run_time(onnx: OnnxEmbedder, cache_root: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from speech2image.config import ModerationConfig\n"
        "from speech2image.moderation.embedder import OnnxEmbedder\n"
        "from speech2image.moderation.semantic import SemanticModerator\n"
        "embedder = OnnxEmbedder(cache_root=Path(sys.argv[1]))\n"
        "SemanticModerator(ModerationConfig(), embedder).check('a red fox')\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(cache_root)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


class Precomputed:
    """Rows embedded beforehand in one batch: check() runs the head, not the model."""

    def __init__(self, prompts: list[str], rows: np.ndarray) -> None:
        self.rows = dict(zip(prompts, rows, strict=True))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.rows[text] for text in texts])


def test_the_head_gives_the_same_verdicts_on_either_embedding(
    onnx: OnnxEmbedder, reference: TorchEmbedder
) -> None:
    """The committed head was trained on torch embeddings; it holds on the int8 ones."""
    config = ModerationConfig(backends=("semantic",))
    prompts = dev_prompts()
    texts = ["warm up", *prompts]  # what SemanticModerator checks when it starts
    on_onnx = SemanticModerator(config, Precomputed(texts, onnx.embed(texts)))
    on_torch = SemanticModerator(config, Precomputed(texts, reference.embed(texts)))
    differ = [p for p in prompts if on_onnx.check(p).allowed != on_torch.check(p).allowed]
    assert 1 - len(differ) / len(prompts) >= MIN_VERDICT_AGREEMENT, differ
