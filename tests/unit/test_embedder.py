"""The embedder's cache without the model: names, digests, atomic writes, rebuilds.

The torch -> ONNX export is replaced by a fake that writes known bytes; what the
real export produces is checked in tests/integration/test_embedder.py.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import platformdirs
import pytest

from speech2image.model_files import ModelError
from speech2image.moderation import embedder
from speech2image.moderation.embedder import (
    DIGEST_FILE,
    MAX_TOKENS,
    MODEL_FILE,
    encode_batch,
    ensure_onnx_model,
    load_tokenizer,
    onnx_model_dir,
    prepare_embedder,
    read_verified,
    write_atomically,
)

FAKE_MODEL = b"an int8 model, or so we pretend" * 1000


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A model folder with stand-in weights (only hashed, never loaded, here)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights, version 1")
    return folder


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every call of the (fake) export, by the path it wrote."""
    calls: list[Path] = []

    def fake_export(model_dir: Path, out: Path, work: Path) -> None:
        calls.append(out)
        out.write_bytes(FAKE_MODEL)

    monkeypatch.setattr(embedder, "export_int8", fake_export)
    return calls


def leftovers(cache_root: Path, folder: Path) -> set[str]:
    """Anything in the cache that is not the model, its digest or the lock file."""
    expected = {
        folder,
        folder / MODEL_FILE,
        folder / DIGEST_FILE,
        cache_root / f"{folder.name}.lock",
    }
    return {str(p.relative_to(cache_root)) for p in cache_root.rglob("*") if p not in expected}


def test_the_cache_folder_is_named_by_the_weights_and_the_export_settings(
    model_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = onnx_model_dir(model_dir, cache_root)
    assert folder.parent == cache_root
    assert re.fullmatch(r"minilm-onnx-[0-9a-f]{12}", folder.name)
    assert onnx_model_dir(model_dir, cache_root) == folder
    monkeypatch.setattr(embedder, "EXPORT_FORMAT", embedder.EXPORT_FORMAT + 1)
    assert onnx_model_dir(model_dir, cache_root) != folder
    monkeypatch.undo()
    (model_dir / "model.safetensors").write_bytes(b"weights, version 2")
    assert onnx_model_dir(model_dir, cache_root) != folder


def test_the_export_settings_name_the_tools_that_write_the_file() -> None:
    settings = embedder.export_settings()
    for tool in ("torch", "onnx", "onnxruntime"):
        assert re.search(rf"\b{tool}=\S+", settings)


def test_the_cache_folder_defaults_to_the_user_cache(model_dir: Path) -> None:
    assert onnx_model_dir(model_dir).parent == platformdirs.user_cache_path("speech2image")


def test_missing_weights_are_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        onnx_model_dir(tmp_path, tmp_path / "cache")


def test_first_use_builds_and_logs_then_the_cache_is_reused(
    model_dir: Path, cache_root: Path, exports: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=embedder.__name__)
    folder, data = ensure_onnx_model(model_dir, cache_root)
    assert data == FAKE_MODEL
    assert len(exports) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "preparing the moderation model for ONNX Runtime (once, a few seconds)" in messages
    assert any(
        re.match(r"moderation model ready for ONNX Runtime in \d+\.\d s", m) for m in messages
    )
    caplog.clear()
    assert ensure_onnx_model(model_dir, cache_root) == (folder, FAKE_MODEL)
    assert len(exports) == 1
    assert caplog.records == []
    assert leftovers(cache_root, folder) == set()


def truncate(folder: Path) -> None:
    model = folder / MODEL_FILE
    model.write_bytes(model.read_bytes()[:1000])


def flip_a_byte(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(data))


def drop_the_digest(folder: Path) -> None:
    (folder / DIGEST_FILE).unlink()


def empty_the_digest(folder: Path) -> None:
    (folder / DIGEST_FILE).write_text("", encoding="ascii")


def drop_the_model(folder: Path) -> None:
    (folder / MODEL_FILE).unlink()


@pytest.mark.parametrize(
    "damage", [truncate, flip_a_byte, drop_the_digest, empty_the_digest, drop_the_model]
)
def test_a_damaged_cache_is_detected_and_rebuilt(
    model_dir: Path, cache_root: Path, exports: list[Path], damage: Callable[[Path], None]
) -> None:
    folder, _ = ensure_onnx_model(model_dir, cache_root)
    damage(folder)
    assert read_verified(folder) is None
    assert ensure_onnx_model(model_dir, cache_root) == (folder, FAKE_MODEL)
    assert len(exports) == 2
    assert read_verified(folder) == FAKE_MODEL


def test_a_corrupt_file_is_logged_as_a_warning(
    model_dir: Path, cache_root: Path, exports: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    folder, _ = ensure_onnx_model(model_dir, cache_root)
    flip_a_byte(folder)
    ensure_onnx_model(model_dir, cache_root)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "does not match its digest" in warnings[0].getMessage()


def test_a_failed_export_leaves_nothing_half_written(
    model_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_export(model_dir: Path, out: Path, work: Path) -> None:
        out.write_bytes(FAKE_MODEL[:100])  # a crash halfway through writing
        raise RuntimeError("out of memory")

    monkeypatch.setattr(embedder, "export_int8", broken_export)
    with pytest.raises(ModelError, match="could not export the moderation model to ONNX"):
        ensure_onnx_model(model_dir, cache_root)
    folder = onnx_model_dir(model_dir, cache_root)
    assert not (folder / MODEL_FILE).exists()
    assert leftovers(cache_root, folder) == set()


def test_what_a_killed_export_left_behind_is_removed(
    model_dir: Path, cache_root: Path, exports: list[Path]
) -> None:
    folder = onnx_model_dir(model_dir, cache_root)
    stale = cache_root / f".{folder.name}-tmp-abc123"
    stale.mkdir(parents=True)
    (stale / "model.fp32.onnx").write_bytes(b"half")
    folder.mkdir()
    (folder / f".{DIGEST_FILE}.xyz").write_bytes(b"half")
    ensure_onnx_model(model_dir, cache_root)
    assert leftovers(cache_root, folder) == set()


def test_two_processes_at_once_export_once(
    model_dir: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock excludes separate open files even within one process, so threads show it."""
    calls: list[Path] = []

    def slow_export(model_dir: Path, out: Path, work: Path) -> None:
        calls.append(out)
        time.sleep(0.3)
        out.write_bytes(FAKE_MODEL)

    monkeypatch.setattr(embedder, "export_int8", slow_export)
    results: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_onnx_model(model_dir, cache_root)[1]))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [FAKE_MODEL] * 3
    assert len(calls) == 1


def test_an_unwritable_cache_is_a_model_error(
    model_dir: Path, tmp_path: Path, exports: list[Path]
) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(ModelError, match="cannot write the moderation model"):
        ensure_onnx_model(model_dir, not_a_folder / "cache")


def test_write_atomically_keeps_the_old_file_if_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file"
    write_atomically(path, b"old")

    def no_rename(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        write_atomically(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_prepare_embedder_says_what_it_does(
    model_dir: Path, cache_root: Path, exports: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedder, "embedding_model_dir", lambda: model_dir)
    said: list[str] = []
    folder = prepare_embedder(said.append, cache_root)
    assert said[0].startswith("moderation model: preparing")
    assert re.fullmatch(
        rf"moderation model: ready in {re.escape(str(folder))} \(\d+\.\d s\)", said[1]
    )
    said.clear()
    assert prepare_embedder(said.append, cache_root) == folder
    assert said == [f"moderation model: already prepared for ONNX Runtime in {folder}"]
    assert len(exports) == 1


def test_the_quantisers_notes_stay_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def record(path: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("root", level, path, 1, message, None, None)

    keep = embedder.not_a_quantiser_note
    quantiser = "/venv/lib/onnxruntime/quantization/onnx_quantizer.py"
    assert not keep(record(quantiser, logging.INFO, "Ignore MatMul due to non constant B"))
    hint = "Please consider to run pre-processing before quantization."
    assert not keep(record(quantiser, logging.WARNING, hint))
    assert keep(record(quantiser, logging.WARNING, "something went wrong"))
    assert keep(record("/app/ours.py", logging.INFO, "ours"))


def test_the_tokenizer_cuts_long_text_and_pads_only_a_batch() -> None:
    """The packaged tokenizer.json (data, not the model): it pads to 128 on its own."""
    tokenizer = load_tokenizer(embedder.embedding_model_dir())
    alone = encode_batch(tokenizer, ["a red fox"])
    assert alone["input_ids"].shape == (1, 5)  # [CLS] a red fox [SEP]
    assert alone["attention_mask"].tolist() == [[1] * 5]
    long = encode_batch(tokenizer, ["fox " * 200])
    assert long["input_ids"].shape == (1, MAX_TOKENS)
    batch = encode_batch(tokenizer, ["a red fox", "a lighthouse on a cliff at sunset"])
    assert batch["input_ids"].shape == (2, 9)
    assert batch["attention_mask"][0].tolist() == [1] * 5 + [0] * 4
    assert batch["input_ids"][0, 5:].tolist() == [0] * 4  # [PAD]
    assert (batch["input_ids"][0, :5] == alone["input_ids"][0]).all()
