"""The gallery writer: names, AUTOMATIC1111 metadata, sidecars, no overwrite, no partials."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery.writer import (
    GalleryWriter,
    ImageRecord,
    a1111_parameters,
    image_name,
    slugify,
)

WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)


def record(prompt: str = "a red fox sleeping under a cherry tree", seed: int = 42) -> ImageRecord:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    return ImageRecord(
        image=Image.fromarray(pixels),
        prompt=prompt,
        seed=seed,
        steps=4,
        guidance=0.0,
        width=16,
        height=16,
        sampler="EulerAncestralDiscreteScheduler",
        model="stabilityai/sd-turbo",
        negative_prompt="blurry",
        sidecar={"transcript": "A red fox sleeping under a cherry tree.", "id": "abc123"},
    )


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A red fox, sleeping under a cherry tree!", "a-red-fox-sleeping-under-a-cherry-tree"),
        ("Café au lait ☕ on a table", "cafe-au-lait-on-a-table"),
        ("../../etc/passwd", "etc-passwd"),
        ("   ", "image"),
        ("水彩画", "image"),
        ("word " * 30, "-".join(["word"] * 9)),
        ("x" * 80, "x" * 48),
    ],
)
def test_slugify(prompt: str, slug: str) -> None:
    assert slugify(prompt) == slug
    assert len(slugify(prompt)) <= 48


def test_name_layout() -> None:
    assert image_name(WHEN, "A red fox", 7) == Path("2026-11-25/140309-a-red-fox-7.png")
    assert image_name(WHEN, "A red fox", 7, attempt=2) == Path(
        "2026-11-25/140309-a-red-fox-7-2.png"
    )


def test_a1111_parameters_text() -> None:
    assert a1111_parameters(record()) == (
        "a red fox sleeping under a cherry tree\n"
        "Negative prompt: blurry\n"
        "Steps: 4, Sampler: Euler a, CFG scale: 0, Seed: 42, Size: 16x16, "
        "Model: stabilityai/sd-turbo"
    )


def test_write_png_with_metadata_and_sidecar(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path / "outputs")
    writer.prepare()
    path = writer.write(record(), WHEN)

    assert (
        path == tmp_path / "outputs/2026-11-25/140309-a-red-fox-sleeping-under-a-cherry-tree-42.png"
    )
    with Image.open(path) as image:
        assert image.size == (16, 16)
        assert image.text["parameters"] == a1111_parameters(record())
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["prompt"] == "a red fox sleeping under a cherry tree"
    assert sidecar["transcript"] == "A red fox sleeping under a cherry tree."
    assert sidecar["seed"] == 42
    assert sidecar["image"] == path.name
    assert sidecar["speech2image"]
    assert list((tmp_path / "outputs/.tmp").iterdir()) == []


def test_never_overwrites(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path)
    first = writer.write(record(seed=5), WHEN)
    before = first.read_bytes()
    second = writer.write(record(seed=5), WHEN)
    third = writer.write(record(seed=5), WHEN)
    assert second.name.endswith("-5-2.png")
    assert third.name.endswith("-5-3.png")
    assert first.read_bytes() == before
    assert json.loads(second.with_suffix(".json").read_text())["image"] == second.name


def test_prepare_removes_leftovers_of_an_interrupted_write(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp" / "tmpabc.part"
    stale.parent.mkdir()
    stale.write_bytes(b"\x89PNG half")
    GalleryWriter(tmp_path).prepare()
    assert not stale.exists()
