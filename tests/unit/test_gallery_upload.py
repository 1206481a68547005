"""Decoding what browsers record: real speech (tests/data/jfk.flac) encoded as Chrome
(WebM/Opus without a duration), Firefox (Ogg/Opus) and a WAV would send it, and
uploads that are not audio at all."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from PIL import Image

from speech2image.gallery.upload import (
    MAX_UPLOAD_BYTES,
    UploadError,
    check_declared_length,
    decode_upload,
)
from speech2image.pcm import SAMPLE_RATE
from tests.support import DATA, data_audio

JFK_SECONDS = 11.0


def jfk_stereo() -> tuple[npt.NDArray[np.float32], int]:
    samples, rate = soundfile.read(DATA / "jfk.flac", dtype="float32", always_2d=True)
    return samples, int(rate)


def encode_opus(
    container: str, samples: npt.NDArray[np.float32], rate: int, **options: str
) -> bytes:
    """Opus at 48 kHz mono in ``container``, as MediaRecorder writes it."""
    mono = samples.mean(axis=1, dtype=np.float32)
    out = io.BytesIO()
    with av.open(out, "w", format=container, options=options) as muxer:
        stream = muxer.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        frames: list[av.AudioFrame] = []
        for start in range(0, len(mono), rate // 10):
            frame = av.AudioFrame.from_ndarray(
                mono[None, start : start + rate // 10], format="flt", layout="mono"
            )
            frame.sample_rate = rate
            frames += resampler.resample(frame)
        for chunk in [*frames, *resampler.resample(None), None]:
            for packet in stream.encode(chunk):
                muxer.mux(packet)
    return out.getvalue()


def encode_wav(samples: npt.NDArray[np.float32], rate: int) -> bytes:
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.fixture(scope="session")
def recordings() -> dict[str, bytes]:
    samples, rate = jfk_stereo()
    return {
        # Chrome's MediaRecorder writes a live WebM: no duration, no cues.
        "webm": encode_opus("webm", samples, rate, live="1"),
        "ogg": encode_opus("ogg", samples, rate),
        "wav": encode_wav(samples, rate),  # 44.1 kHz stereo
        "flac": (DATA / "jfk.flac").read_bytes(),
    }


@pytest.fixture(scope="session")
def reference() -> npt.NDArray[np.float64]:
    """jfk.flac through the product's own file reader (soundfile + soxr)."""
    return data_audio("jfk.flac").astype(np.float64)


def rms(samples: npt.NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(samples**2)))


@pytest.mark.parametrize("kind", ["webm", "ogg", "wav", "flac"])
def test_browser_recordings_decode_to_the_speech_format(
    recordings: dict[str, bytes], reference: npt.NDArray[np.float64], kind: str
) -> None:
    audio = decode_upload(recordings[kind], f"audio/{kind}")

    assert audio.dtype == np.int16
    assert audio.ndim == 1
    assert len(audio) / SAMPLE_RATE == pytest.approx(JFK_SECONDS, abs=0.1)
    decoded = audio.astype(np.float64)
    assert rms(decoded) == pytest.approx(rms(reference), rel=0.05)
    n = min(len(decoded), len(reference))
    # The same speech, aligned: not just something as loud.
    assert np.corrcoef(decoded[:n], reference[:n])[0, 1] > 0.9


def test_chrome_style_webm_has_no_duration_to_rely_on(recordings: dict[str, bytes]) -> None:
    with av.open(io.BytesIO(recordings["webm"]), mode="r") as container:
        assert container.duration is None
    assert len(decode_upload(recordings["webm"])) > 10 * SAMPLE_RATE


def test_a_recording_longer_than_the_limit_is_refused() -> None:
    samples, rate = jfk_stereo()
    forty_seconds = encode_opus("ogg", np.concatenate([samples] * 4), rate)

    with pytest.raises(UploadError) as refused:
        decode_upload(forty_seconds, "audio/ogg")

    assert refused.value.status == 413
    assert "longer than 30 s" in str(refused.value)


def test_the_duration_limit_is_the_callers(recordings: dict[str, bytes]) -> None:
    with pytest.raises(UploadError) as refused:
        decode_upload(recordings["ogg"], max_seconds=5)
    assert refused.value.status == 413
    assert len(decode_upload(recordings["ogg"], max_seconds=12)) > 10 * SAMPLE_RATE


def test_a_recording_cut_off_keeps_what_came_before(recordings: dict[str, bytes]) -> None:
    cut = recordings["ogg"][: len(recordings["ogg"]) // 2]
    seconds = len(decode_upload(cut)) / SAMPLE_RATE
    assert 3 < seconds < 8


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    return out.getvalue()


def video_only_webm() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as muxer:
        stream = muxer.add_stream("libvpx", rate=10)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode(None):
            muxer.mux(packet)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "make", "status"),
    [
        ("random bytes", lambda: np.random.default_rng(7).bytes(20000), 415),
        ("a text file", lambda: b"ask not what your country can do for you\n" * 40, 415),
        ("a truncated header", lambda: b"OggS\x00\x02" + b"\x00" * 30, 415),
        ("empty", lambda: b"", 422),
        ("a PNG", png_bytes, 422),
        ("a video without sound", video_only_webm, 422),
    ],
)
def test_what_is_not_audio_gets_a_clear_client_error(
    name: str, make: Callable[[], bytes], status: int
) -> None:
    with pytest.raises(UploadError) as refused:
        decode_upload(make(), "audio/webm")
    assert refused.value.status == status, name
    assert "record WebM/Opus, Ogg/Opus or WAV" in str(refused.value)


def test_more_bytes_than_the_limit_are_refused_before_decoding() -> None:
    with pytest.raises(UploadError) as refused:
        decode_upload(b"\x00" * (MAX_UPLOAD_BYTES + 1))
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        (None, None),
        ("0", None),
        (str(MAX_UPLOAD_BYTES), None),
        (str(MAX_UPLOAD_BYTES + 1), 413),
        ("ten", 400),
        ("-5", 400),
    ],
)
def test_declared_length(declared: str | None, status: int | None) -> None:
    if status is None:
        check_declared_length(declared)
        return
    with pytest.raises(UploadError) as refused:
        check_declared_length(declared)
    assert refused.value.status == status
