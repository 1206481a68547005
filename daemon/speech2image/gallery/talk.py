"""Talking and typing to the daemon from the page: ``POST /api/speak`` and
``POST /api/generate``.

The page's requests join the daemon's own queue (:class:`Talk` is implemented by
the daemon's side, ``webtalk.py``): one model set, one drawing queue, shared with the
wake word. The answer is only "accepted as request R" or "busy"; what happens next
(transcript, picture, refusal) reaches the page as ``daemon`` events on its stream,
exactly as the desktop notification hears it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..pcm import Frame
from .upload import MAX_UPLOAD_BYTES, UploadError, check_declared_length, decode_upload

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 500
MAX_JSON_BYTES = 16 * 1024
BROWSE_ONLY = (
    "this gallery is browse-only: it is not served by the daemon, so it cannot take "
    "requests; set [gallery] serve = true in the daemon's config and open its page"
)
BUSY = "busy: the daemon is still working on earlier requests; try again in a moment"


class BusyError(Exception):
    """The daemon's queue is full; the request was refused (and ended as ``busy``)."""


class Talk(Protocol):
    """What the page may ask of a running daemon."""

    def speak(self, audio: Frame) -> str:
        """Queue a spoken request (16 kHz mono int16); its request id, or :class:`BusyError`."""
        ...

    def type(self, prompt: str) -> str:
        """Queue a typed prompt; its request id, or :class:`BusyError`."""
        ...

    def state(self) -> tuple[str, str]:
        """The daemon's live state and its one-line detail."""
        ...


def talk_routes() -> list[Route]:
    return [
        Route("/api/speak", _speak, methods=["POST"]),
        Route("/api/generate", _generate, methods=["POST"]),
    ]


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _talk(request: HttpRequest) -> Talk | None:
    talk: Talk | None = request.app.state.talk
    return talk


async def read_bounded(request: HttpRequest, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (whatever it declared)."""
    check_declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadError(413, f"the upload is larger than {limit // (1024 * 1024)} MB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _speak(request: HttpRequest) -> Response:
    talk = _talk(request)
    if talk is None:
        return _error(501, BROWSE_ONLY)
    content_type = request.headers.get("content-type", "")
    try:
        data = await read_bounded(request, MAX_UPLOAD_BYTES)
        audio = await run_in_threadpool(decode_upload, data, content_type)
    except UploadError as exc:
        return _error(exc.status, str(exc))
    try:
        request_id = await run_in_threadpool(talk.speak, audio)
    except BusyError:
        return _error(503, BUSY, busy=True)
    log.info("request %s spoken on the web page (%.1f s)", request_id, len(audio) / 16000)
    return JSONResponse({"request": request_id}, status_code=202)


async def _generate(request: HttpRequest) -> Response:
    talk = _talk(request)
    if talk is None:
        return _error(501, BROWSE_ONLY)
    prompt = await _typed_prompt(request)
    if isinstance(prompt, Response):
        return prompt
    try:
        request_id = await run_in_threadpool(talk.type, prompt)
    except BusyError:
        return _error(503, BUSY, busy=True)
    log.info("request %s typed on the web page", request_id)
    return JSONResponse({"request": request_id}, status_code=202)


async def _typed_prompt(request: HttpRequest) -> str | Response:
    """The prompt of a ``/api/generate`` body, or the answer saying what is wrong."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, 'send the prompt as JSON: Content-Type: application/json, {"prompt": …}')
    try:
        body = json.loads(await read_bounded(request, MAX_JSON_BYTES))
    except UploadError as exc:
        return _error(exc.status, str(exc))
    except ValueError:
        return _error(400, 'the body is not JSON; send {"prompt": "a red fox…"}')
    prompt = body.get("prompt") if isinstance(body, dict) else None
    problem = prompt_problem(prompt)
    if problem is not None or not isinstance(prompt, str):
        return _error(422, problem or "no prompt")
    return " ".join(prompt.split())


def prompt_problem(prompt: object) -> str | None:
    """Why a typed prompt cannot be taken, or None."""
    if not isinstance(prompt, str):
        return 'the JSON needs a "prompt" string, e.g. {"prompt": "a red fox"}'
    if not prompt.strip():
        return "the prompt is empty: say what to draw"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}"
    return None
