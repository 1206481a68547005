"""Audio recorded in the browser, decoded into what the transcriber takes.

``POST /api/speak`` receives whatever the page's ``MediaRecorder`` made: WebM/Opus
from Chrome, Ogg/Opus from Firefox, or WAV (plus FLAC, MP3 and AAC, which the
ffmpeg inside PyAV also reads). The body is decoded in memory with PyAV, downmixed,
resampled to 16 kHz and returned as one int16 array, the format an utterance from
the microphone has (``speech2image.pcm``), so the speech stage cannot tell them apart.

Uploads are untrusted: the size is bounded before decoding, and the duration while
decoding, so a short file that expands into hours of audio stops at the limit
instead of filling memory. Chrome's WebM has no duration in its header, so the
decoded sample count is what counts, never what the container claims.
"""

from __future__ import annotations

import io
import logging

import av
import av.error
import numpy as np
import numpy.typing as npt

from ..pcm import SAMPLE_RATE, Frame

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_SECONDS",
    "UploadError",
    "check_declared_length",
    "decode_upload",
]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_SECONDS = 30.0
# What the page should record instead, named in every "cannot decode" answer.
RECORD_HINT = "record WebM/Opus, Ogg/Opus or WAV"


class UploadError(Exception):
    """An upload the daemon will not transcribe; ``status`` is the HTTP answer.

    413: too large or too long; 415: not audio the daemon can decode;
    422: audio that holds nothing to transcribe (empty, no audio stream, no samples);
    400: a malformed ``Content-Length``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_declared_length(content_length: str | None, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Refuse a body by its ``Content-Length`` before reading any of it.

    ``None`` (a chunked body) passes: the web layer then counts bytes as it reads.
    """
    if content_length is None:
        return
    text = content_length.strip()
    if not text.isdigit():
        raise UploadError(400, f"Content-Length {content_length!r} is not a byte count")
    if int(text) > limit:
        raise UploadError(413, _too_large(int(text), limit))


def decode_upload(
    data: bytes, content_type: str = "", max_seconds: float = MAX_UPLOAD_SECONDS
) -> Frame:
    """``data`` as 16 kHz mono int16 samples (``speech2image.pcm``), or :class:`UploadError`.

    ``content_type`` is only named in error messages: the bytes themselves say what
    they are (browsers label WebM recordings ``video/webm`` as often as ``audio/webm``).
    """
    if not data:
        raise UploadError(422, f"the upload is empty: no audio arrived; {RECORD_HINT}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(413, _too_large(len(data), MAX_UPLOAD_BYTES))
    declared = f"sent as {content_type}" if content_type else "sent without a content type"
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, ValueError) as exc:
        raise UploadError(415, _not_audio(f"{declared}: {_reason(exc)}")) from exc
    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["no streams"]
            raise UploadError(
                422,
                f"the upload holds no audio stream ({container.format.name}, "
                f"{', '.join(kinds)}; {declared}); {RECORD_HINT}",
            )
        samples = _decode_stream(container, max_seconds, declared)
    if not samples.size:
        raise UploadError(
            422, f"the upload's audio stream decodes to no samples ({declared}); {RECORD_HINT}"
        )
    log.debug("decoded an upload: %d bytes, %.2f s", len(data), samples.size / SAMPLE_RATE)
    return _to_int16(samples)


def _decode_stream(
    container: av.container.InputContainer, max_seconds: float, declared: str
) -> npt.NDArray[np.float32]:
    """The first audio stream as 16 kHz mono float32, stopping past ``max_seconds``.

    A stream that breaks off (a recording cut mid-packet) keeps what decoded before
    the break; one that breaks before any sample is not audio.
    """
    stream = container.streams.audio[0]
    # Keep the channels through resampling and average them here: ffmpeg's own
    # downmix weights stereo by 1/sqrt(2), which can clip where the mean does not.
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    limit = int(max_seconds * SAMPLE_RATE)
    parts: list[npt.NDArray[np.float32]] = []
    count = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                count += _append(parts, out)
            if count > limit:
                raise UploadError(413, _too_long(max_seconds))
        for out in resampler.resample(None):
            count += _append(parts, out)
    except (av.error.FFmpegError, ValueError) as exc:
        if not count:
            raise UploadError(415, _not_audio(f"{declared}: {_reason(exc)}")) from exc
        log.info("an upload's audio broke off after %.1f s (%s)", count / SAMPLE_RATE, exc)
    if count > limit:
        raise UploadError(413, _too_long(max_seconds))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _append(parts: list[npt.NDArray[np.float32]], frame: av.AudioFrame) -> int:
    """Adds a planar frame's channel mean to ``parts``; returns its sample count."""
    planes = np.asarray(frame.to_ndarray(), dtype=np.float32)
    mono = planes.mean(axis=0, dtype=np.float32) if planes.ndim == 2 else planes
    parts.append(mono)
    return int(mono.size)


def _to_int16(samples: npt.NDArray[np.float32]) -> Frame:
    """The same scaling as the microphone path (``listening.audio.to_int16``)."""
    scaled = np.clip(np.round(samples * 32768.0), -32768, 32767)
    return scaled.astype(np.int16)


def _reason(exc: Exception) -> str:
    """ffmpeg's words for what went wrong, without PyAV's errno prefix and file name."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)


def _not_audio(detail: str) -> str:
    return f"the upload is not audio the daemon can decode ({detail}); {RECORD_HINT}"


def _too_large(size: int, limit: int) -> str:
    return (
        f"the upload is {size / 1e6:.1f} MB, more than the {limit / 1e6:.1f} MB the "
        "daemon accepts; record a shorter clip"
    )


def _too_long(max_seconds: float) -> str:
    return (
        f"the recording is longer than {max_seconds:g} s, the most the daemon "
        "transcribes; record a shorter clip"
    )
