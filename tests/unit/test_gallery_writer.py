"""The gallery writer: names, AUTOMATIC1111 metadata, sidecars, no overwrite, no partials."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.gallery.writer import GalleryWriter, a1111_parameters, image_name, slugify
from speech2image.request import Request
from tests.support import drawn_request

WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)


def record(prompt: str = "a red fox sleeping under a cherry tree", seed: int = 42) -> Request:
    return drawn_request(
        prompt,
        seed,
        16,
        steps=4,
        sampler="EulerAncestralDiscreteScheduler",
        model="stabilityai/sd-turbo",
        negative_prompt="blurry",
        transcript="A red fox sleeping under a cherry tree.",
    )


def pixels(seed: int) -> Image.Image:
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    )


def parameters(request: Request) -> str:
    assert request.image is not None
    return a1111_parameters(request.prompt, request.image)


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
    assert parameters(record()) == (
        "a red fox sleeping under a cherry tree\n"
        "Negative prompt: blurry\n"
        "Steps: 4, Sampler: Euler a, CFG scale: 0, Seed: 42, Size: 16x16, "
        "Model: stabilityai/sd-turbo"
    )


def test_write_png_with_metadata_and_sidecar(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path / "outputs")
    writer.prepare()
    path = writer.write(pixels(42), record(), WHEN)

    assert (
        path == tmp_path / "outputs/2026-11-25/140309-a-red-fox-sleeping-under-a-cherry-tree-42.png"
    )
    with Image.open(path) as image:
        assert image.size == (16, 16)
        assert image.text["parameters"] == parameters(record())
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["prompt"] == "a red fox sleeping under a cherry tree"
    assert sidecar["transcript"] == "A red fox sleeping under a cherry tree."
    assert sidecar["seed"] == 42
    assert sidecar["image"] == path.name
    assert sidecar["speech2image"]
    assert list((tmp_path / "outputs/.tmp").iterdir()) == []


def test_never_overwrites(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path)
    first = writer.write(pixels(5), record(seed=5), WHEN)
    before = first.read_bytes()
    second = writer.write(pixels(5), record(seed=5), WHEN)
    third = writer.write(pixels(5), record(seed=5), WHEN)
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
