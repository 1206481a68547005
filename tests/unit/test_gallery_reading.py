"""Reading gallery files: A1111 parameters (PNG chunk, JPEG/WebP EXIF), sidecars, files
that are not (yet) images, symlinks and hidden folders; and the index built by a scan:
newest first, search words, cursor paging. No file-system watcher here."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from speech2image.gallery.index import Change, GalleryIndex
from speech2image.gallery.metadata import a1111_parameters
from speech2image.gallery.reading import (
    EXIF_IFD,
    USER_COMMENT,
    A1111Parameters,
    decode_user_comment,
    embedded_parameters,
    entry_id,
    parse_a1111,
    read_entry,
    sidecar_path,
)
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request, noise_picture, png_bytes

WHEN = dt.datetime(2026, 11, 25, 14, 3, 9)
A1111_TEXT = (
    "masterpiece, a lighthouse at dusk,\n"
    "oil painting\n"
    "Negative prompt: lowres, blurry,\n"
    "watermark\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 965400086, Size: 512x768, "
    'Model hash: 45dee52b, Model: v1-5, Lora hashes: "detail: 1a2b, style: 3c4d", '
    'Note: "say \\"hi\\", then: go", Version: v1.9.3'
)


def piexif_unicode(text: str) -> bytes:
    """What piexif's ``UserComment.dump(text, encoding="unicode")`` writes (A1111's way)."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def exif_image_bytes(image_format: str, comment: bytes | None) -> bytes:
    exif = Image.Exif()
    if comment is not None:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    buffer = io.BytesIO()
    noise_picture().save(buffer, image_format, exif=exif)
    return buffer.getvalue()


def put(path: Path, data: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# -- the A1111 parameters text ------------------------------------------------


def test_our_writers_parameters_round_trip() -> None:
    request = drawn_request(
        "a red fox\n  under a   cherry tree",
        42,
        16,
        steps=4,
        sampler="EulerAncestralDiscreteScheduler",
        model="stabilityai/sd-turbo",
        negative_prompt="blurry,\nlow quality",
    )
    assert request.image is not None
    parsed = parse_a1111(a1111_parameters(request.prompt, request.image))
    assert parsed == A1111Parameters(
        "a red fox under a cherry tree",
        "blurry, low quality",
        {
            "Steps": "4",
            "Sampler": "Euler a",
            "CFG scale": "0",
            "Seed": "42",
            "Size": "16x16",
            "Model": "stabilityai/sd-turbo",
        },
    )


def test_a1111_text_with_multi_line_prompt_and_quoted_values() -> None:
    parsed = parse_a1111(A1111_TEXT)
    assert parsed.prompt == "masterpiece, a lighthouse at dusk,\noil painting"
    assert parsed.negative == "lowres, blurry,\nwatermark"
    assert parsed.settings["Sampler"] == "DPM++ 2M Karras"
    assert parsed.settings["Size"] == "512x768"
    assert parsed.settings["Lora hashes"] == "detail: 1a2b, style: 3c4d"
    assert parsed.settings["Note"] == 'say "hi", then: go'
    assert parsed.settings["Version"] == "v1.9.3"
    assert len(parsed.settings) == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a cat on a mat\nSteps: 20, Sampler: Euler, Seed: 5",
            A1111Parameters("a cat on a mat", "", {"Steps": "20", "Sampler": "Euler", "Seed": "5"}),
        ),
        ("a cat, sitting\non a mat", A1111Parameters("a cat, sitting\non a mat", "", {})),
        # Two pairs are not a settings line (A1111 wants three): it is prompt.
        (
            "portrait\nstyle: noir, mood: dark",
            A1111Parameters("portrait\nstyle: noir, mood: dark", "", {}),
        ),
        ("a cat\nNegative prompt: dogs", A1111Parameters("a cat", "dogs", {})),
        ("", A1111Parameters("", "", {})),
        (
            "Steps: 1, Seed: 2, Size: 8x8",
            A1111Parameters("", "", {"Steps": "1", "Seed": "2", "Size": "8x8"}),
        ),
    ],
)
def test_a1111_text_shapes(text: str, expected: A1111Parameters) -> None:
    assert parse_a1111(text) == expected


# -- parameters embedded in image files ---------------------------------------


def open_bytes(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def test_png_parameters_chunk() -> None:
    assert embedded_parameters(open_bytes(png_bytes(A1111_TEXT))) == A1111_TEXT
    text = "café ☕ 水彩画\nNegative prompt: x\nSteps: 1, Seed: 2, Size: 4x4"  # an iTXt chunk
    assert embedded_parameters(open_bytes(png_bytes(text))) == text
    assert embedded_parameters(open_bytes(png_bytes(None))) is None


@pytest.mark.parametrize("image_format", ["JPEG", "WEBP"])
def test_exif_user_comment_as_a1111_writes_it(image_format: str) -> None:
    text = A1111_TEXT.replace("lighthouse", "phare, café ☕ 🦊")
    image = open_bytes(exif_image_bytes(image_format, piexif_unicode(text)))
    assert image.format == image_format
    assert embedded_parameters(image) == text
    assert embedded_parameters(open_bytes(exif_image_bytes(image_format, None))) is None


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"UNICODE\0" + "a fox ☕".encode("utf-16-be"), "a fox ☕"),
        (b"UNICODE\0" + "a fox ☕".encode("utf-16-le"), "a fox ☕"),
        (b"UNICODE\0\xff\xfe" + "a fox".encode("utf-16-le"), "a fox"),
        (b"UNICODE\0\xfe\xff" + "a fox".encode("utf-16-be"), "a fox"),
        (b"ASCII\0\0\0a fox\0", "a fox"),
        (b"\0" * 8 + "a fox é".encode(), "a fox é"),
        ("a fox é, no prefix".encode(), "a fox é, no prefix"),
    ],
)
def test_user_comment_encodings(data: bytes, text: str) -> None:
    assert decode_user_comment(data) == text


# -- one file -----------------------------------------------------------------


def test_entry_of_our_writers_png_and_sidecar(tmp_path: Path) -> None:
    writer = GalleryWriter(tmp_path)
    request = drawn_request("a red fox", 42, 16, steps=4, negative_prompt="blurry")
    path = writer.write(noise_picture(), request, WHEN)
    entry = read_entry(tmp_path, path)
    assert entry is not None
    sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert entry.id == "2026-11-25/140309-a-red-fox-42.png"
    assert entry.time == dt.datetime.fromisoformat(request.created).timestamp()
    assert entry.time != path.stat().st_mtime
    assert (entry.width, entry.height, entry.format) == (16, 16, "PNG")
    assert entry.bytes == path.stat().st_size
    assert entry.mtime_ns == path.stat().st_mtime_ns
    assert (entry.prompt, entry.negative) == ("a red fox", "blurry")
    assert entry.settings["Seed"] == "42"
    assert entry.parameters is not None
    assert entry.parameters.startswith("a red fox\n")
    assert entry.sidecar == sidecar


def test_png_copied_in_by_hand_without_metadata(tmp_path: Path) -> None:
    path = put(tmp_path / "holiday" / "IMG_0001.PNG", png_bytes(None), mtime=1_700_000_000.5)
    entry = read_entry(tmp_path, path)
    assert entry is not None
    assert (entry.id, entry.prompt, entry.negative, entry.settings) == (
        "holiday/IMG_0001.PNG",
        "",
        "",
        {},
    )
    assert (entry.time, entry.parameters, entry.sidecar) == (1_700_000_000.5, None, None)


def test_a_broken_or_timeless_sidecar_falls_back_to_the_file(tmp_path: Path) -> None:
    path = put(tmp_path / "a.png", png_bytes(A1111_TEXT), mtime=1_700_000_000.0)
    sidecar_path(path).write_text("{not json", encoding="utf-8")
    entry = read_entry(tmp_path, path)
    assert entry is not None
    assert (entry.sidecar, entry.time) == (None, 1_700_000_000.0)
    assert entry.prompt.startswith("masterpiece")
    sidecar_path(path).write_text('{"prompt": "the sidecar wins", "created": "soon"}')
    entry = read_entry(tmp_path, path)
    assert entry is not None
    assert (entry.prompt, entry.time) == ("the sidecar wins", 1_700_000_000.0)
    assert entry.negative == "lowres, blurry,\nwatermark"


def test_jpeg_and_webp_with_a1111_exif(tmp_path: Path) -> None:
    for name, image_format in (("a.jpg", "JPEG"), ("b.webp", "WEBP")):
        data = exif_image_bytes(image_format, piexif_unicode(A1111_TEXT))
        entry = read_entry(tmp_path, put(tmp_path / name, data))
        assert entry is not None
        assert (entry.format, entry.prompt) == (image_format, parse_a1111(A1111_TEXT).prompt)
        assert entry.settings["Seed"] == "965400086"


@pytest.mark.parametrize("cut", [0.5, 0.9, -12])
def test_a_file_still_being_written_is_not_an_entry(tmp_path: Path, cut: float) -> None:
    for name, data in (
        ("a.png", png_bytes(A1111_TEXT)),
        ("b.jpg", exif_image_bytes("JPEG", piexif_unicode(A1111_TEXT))),
        ("c.webp", exif_image_bytes("WEBP", None)),
    ):
        end = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
        assert read_entry(tmp_path, put(tmp_path / name, data[:end])) is None, name


def test_a_jpeg_with_a_trailer_counts_once_it_has_rested(tmp_path: Path) -> None:
    """Some cameras append data after the end marker; such a file is taken once it
    has not changed for a few seconds (a copy in progress keeps changing)."""
    data = exif_image_bytes("JPEG", None) + os.urandom(4096)
    path = put(tmp_path / "camera.jpg", data)
    assert read_entry(tmp_path, path) is None
    put(path, data, mtime=time.time() - 60)
    entry = read_entry(tmp_path, path)
    assert entry is not None
    assert entry.bytes == len(data)


def test_what_is_not_an_image_is_not_an_entry(tmp_path: Path) -> None:
    assert read_entry(tmp_path, put(tmp_path / "notes.png", b"just some text\n")) is None
    assert read_entry(tmp_path, put(tmp_path / "a.txt", png_bytes())) is None
    assert read_entry(tmp_path, put(tmp_path / "a.json", png_bytes())) is None
    assert read_entry(tmp_path, put(tmp_path / "empty.png", b"")) is None
    assert read_entry(tmp_path, tmp_path / "missing.png") is None
    (tmp_path / "folder.png").mkdir()
    assert read_entry(tmp_path, tmp_path / "folder.png") is None


@pytest.mark.parametrize(
    "hidden", [".tmp/a.png", ".thumbs/2026-11-25/a.png", ".trash/x/a.png", "day/.a.png"]
)
def test_hidden_folders_and_files_are_not_entries(tmp_path: Path, hidden: str) -> None:
    path = put(tmp_path / hidden, png_bytes())
    assert read_entry(tmp_path, path) is None
    assert entry_id(tmp_path, path) is None


def test_symlinks_count_only_when_they_stay_inside(tmp_path: Path) -> None:
    root, outside = tmp_path / "gallery", tmp_path / "private"
    secret = put(outside / "secret.png", png_bytes())
    inside = put(root / "2026-11-25" / "a.png", png_bytes())
    (root / "out.png").symlink_to(secret)
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    (root / "in.png").symlink_to(inside)
    assert read_entry(root, root / "out.png") is None
    assert read_entry(root, root / "linked-folder" / "secret.png") is None
    entry = read_entry(root, root / "in.png")
    assert entry is not None
    assert (entry.id, entry.bytes) == ("in.png", inside.stat().st_size)


def test_entry_ids(tmp_path: Path) -> None:
    assert entry_id(tmp_path, tmp_path / "d" / "a.png") == "d/a.png"
    assert entry_id(tmp_path, tmp_path / ".." / "a.png") is None
    assert entry_id(tmp_path, tmp_path.parent / "a.png") is None
    assert entry_id(tmp_path, Path(str(tmp_path) + "-other") / "a.png") is None
    assert entry_id(tmp_path, tmp_path) is None


# -- the index, built by scans ------------------------------------------------


def gallery_of(root: Path, count: int) -> list[str]:
    """``count`` PNGs, some sharing a time (the id breaks the tie); ids newest first."""
    data = png_bytes(None)
    for n in range(count):
        prompt = "a red fox" if n % 3 == 0 else "a blue whale"
        path = put(root / f"day-{n % 4}" / f"image-{n:03d}.png", data, mtime=1e9 + n // 2)
        sidecar_path(path).write_text(json.dumps({"prompt": f"{prompt} number {n}"}))
    order = sorted(
        ((1e9 + n // 2, f"day-{n % 4}/image-{n:03d}.png") for n in range(count)), reverse=True
    )
    return [image_id for _, image_id in order]


def all_pages(index: GalleryIndex, query: str = "", limit: int = 60) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        found, cursor = index.page(query, cursor, limit)
        pages.append([entry.id for entry in found])
        if cursor is None:
            return pages


def test_scan_lists_newest_first_and_pages_cover_everything_once(tmp_path: Path) -> None:
    newest_first = gallery_of(tmp_path, 250)
    index = GalleryIndex(tmp_path)
    assert index.scan() == 250
    assert len(index) == 250
    pages = all_pages(index)
    assert [len(page) for page in pages] == [60, 60, 60, 60, 10]
    assert [image_id for page in pages for image_id in page] == newest_first
    foxes = [image_id for image_id in newest_first if int(image_id[-7:-4]) % 3 == 0]
    fox_pages = all_pages(index, "Fox  RED", limit=30)
    assert [image_id for page in fox_pages for image_id in page] == foxes
    assert [len(page) for page in fox_pages] == [30, 30, 24]


def test_search_needs_every_word_in_the_prompt_or_name(tmp_path: Path) -> None:
    gallery_of(tmp_path, 12)
    index = GalleryIndex(tmp_path)
    index.scan()

    def ids(query: str) -> list[str]:
        return [entry.id for entry in index.page(query, limit=200)[0]]

    assert ids("WHALE 11") == ["day-3/image-011.png"]
    assert ids("fox day-3") == ["day-3/image-003.png"]
    assert ids("DAY-2 image-006") == ["day-2/image-006.png"]
    assert ids("whale") == [f"day-{n % 4}/image-{n:03d}.png" for n in (11, 10, 8, 7, 5, 4, 2, 1)]
    assert ids("fox whale") == []
    assert len(ids("   ")) == 12
    assert index.page("fox", limit=4) == (index.page("fox", limit=200)[0], None)


def test_a_page_exactly_full_has_no_next(tmp_path: Path) -> None:
    gallery_of(tmp_path, 6)
    index = GalleryIndex(tmp_path)
    index.scan()
    assert index.page(limit=6)[1] is None
    assert index.page(limit=5)[1] is not None
    assert index.page("fox", limit=2)[1] is None


@pytest.mark.parametrize("cursor", ["", "abc", "1.5", "|a.png", "nan|a.png", "inf|a", "1.5|"])
def test_a_cursor_the_index_did_not_make_is_refused(tmp_path: Path, cursor: str) -> None:
    index = GalleryIndex(tmp_path)
    with pytest.raises(ValueError, match="cursor"):
        index.page(before=cursor)


def test_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="limit"):
        GalleryIndex(tmp_path).page(limit=0)


def test_rescans_and_refresh_publish_the_differences(tmp_path: Path) -> None:
    gallery_of(tmp_path, 3)
    index = GalleryIndex(tmp_path)
    seen: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("a listener with a bug")

    index.subscribe(broken)
    unsubscribe = index.subscribe(seen.append)
    index.scan()
    assert sorted((c.kind, c.id) for c in seen) == [
        ("added", "day-0/image-000.png"),
        ("added", "day-1/image-001.png"),
        ("added", "day-2/image-002.png"),
    ]
    seen.clear()
    (tmp_path / "day-0" / "image-000.png").unlink()
    put(tmp_path / "day-9" / "new.png", png_bytes(A1111_TEXT))
    sidecar_path(tmp_path / "day-1" / "image-001.png").write_text('{"prompt": "changed"}')
    assert index.scan() == 3
    assert sorted((c.kind, c.id) for c in seen) == [
        ("added", "day-9/new.png"),
        ("removed", "day-0/image-000.png"),
        ("updated", "day-1/image-001.png"),
    ]
    updated = index.get("day-1/image-001.png")
    assert updated is not None
    assert updated.prompt == "changed"
    seen.clear()
    sidecar_path(tmp_path / "day-9" / "new.png").write_text('{"prompt": "refreshed"}')
    index.refresh("day-9/new.png")
    index.refresh("../outside.png")
    index.refresh("day-9/new.json")
    assert [(c.kind, c.entry and c.entry.prompt) for c in seen] == [("updated", "refreshed")]
    unsubscribe()
    index.refresh("day-2/image-002.png")
    (tmp_path / "day-2" / "image-002.png").unlink()
    index.refresh("day-2/image-002.png")
    assert len(seen) == 1
    assert index.get("day-2/image-002.png") is None


def test_an_unreadable_file_is_left_out_of_a_scan(tmp_path: Path) -> None:
    put(tmp_path / "half.png", png_bytes(A1111_TEXT)[:100])
    put(tmp_path / "whole.png", png_bytes(A1111_TEXT))
    index = GalleryIndex(tmp_path)
    assert index.scan() == 1
    assert index.get("half.png") is None
    entry = index.get("whole.png")
    assert entry is not None
    assert entry.prompt == parse_a1111(A1111_TEXT).prompt
