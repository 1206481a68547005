"""The gallery page's HTTP API: a small Starlette app over the folder.

Every image the API names is looked up in the in-memory index, whose ids are paths
inside the gallery that :func:`reading.read_entry` accepted; a path that is not an
indexed id (``..``, an absolute path, a symlink out of the gallery, a hidden folder)
is simply not found. Files are served only after resolving them again, inside the
gallery, at the moment they are read.

Blocking work (thumbnails, SQLite, moving files to the trash, decoding audio) runs
in Starlette's thread pool, so one slow thumbnail never stalls the event stream.
Talking to the daemon (``/api/speak``, ``/api/generate``) goes through :class:`Talk`;
a standalone gallery has none and says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .entry import ImageEntry
from .index import Change, GalleryIndex
from .live import EventHub, sse_stream
from .pagestate import PageState
from .reading import read_entry
from .talk import Talk, talk_routes
from .thumbs import ThumbnailError, Thumbnails
from .trash import NotInTrash, Trash, TrashConflict, TrashError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "grid.js": "text/javascript; charset=utf-8",
    "talk.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_LIMIT = 200
DEFAULT_LIMIT = 60
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "MPO": "image/jpeg"}
# Images are write-once, so a URL's bytes never change while it exists.
IMMUTABLE = "private, max-age=86400"


@dataclass(frozen=True)
class Gallery:
    """The folder's parts the page works with; all of them thread-safe."""

    root: Path
    index: GalleryIndex
    thumbs: Thumbnails
    state: PageState
    trash: Trash

    @classmethod
    def open(cls, root: Path) -> Gallery:
        root = root.expanduser().resolve()
        return cls(root, GalleryIndex(root), Thumbnails(root), PageState(root), Trash(root))

    def present(self, entry: ImageEntry, detail: bool = False) -> dict[str, Any]:
        """An entry as the API returns it: its fields plus page state and URLs."""
        out = entry.detail() if detail else entry.summary()
        path = quote_id(entry.id)
        out.update(
            favourite=self.state.is_favourite(entry.id),
            thumb=f"/thumbs/{path}",
            file=f"/files/{path}",
        )
        return out


def quote_id(image_id: str) -> str:
    from urllib.parse import quote

    return "/".join(quote(part, safe="") for part in image_id.split("/"))


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(gallery: Gallery, hub: EventHub, talk: Talk | None = None) -> Starlette:
    """The app; the caller owns the index's observer and wraps the access middleware."""
    routes = [
        Route("/", _page),
        Route("/static/{name}", _static),
        Route("/api/status", _status),
        Route("/api/images", _list),
        Route("/api/images/{id:path}", _detail, methods=["GET"]),
        Route("/api/images/{id:path}", _delete, methods=["DELETE"]),
        Route("/api/favourites/{id:path}", _favourite, methods=["POST", "DELETE"]),
        Route("/files/{id:path}", _file),
        Route("/thumbs/{id:path}", _thumb),
        Route("/api/trash", _trash_list, methods=["GET"]),
        Route("/api/trash", _trash_empty, methods=["DELETE"]),
        Route("/api/trash/{tid}/restore", _trash_restore, methods=["POST"]),
        Route("/trash-files/{tid}", _trash_file),
        Route("/api/events", _events),
        *talk_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        exception_handlers={HTTPException: _http_error},  # type: ignore[dict-item]
    )
    app.state.gallery = gallery
    app.state.hub = hub
    app.state.talk = talk
    return app


@asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    gallery: Gallery = app.state.gallery
    hub: EventHub = app.state.hub
    hub.bind(asyncio.get_running_loop())
    unsubscribe = gallery.index.subscribe(lambda change: _publish_change(gallery, hub, change))
    try:
        yield
    finally:
        unsubscribe()
        hub.unbind()


def _publish_change(gallery: Gallery, hub: EventHub, change: Change) -> None:
    if change.entry is None:
        hub.publish(change.kind, {"id": change.id})
    else:
        hub.publish(change.kind, gallery.present(change.entry))


async def _http_error(_request: HttpRequest, exc: HTTPException) -> Response:
    return error(exc.status_code, str(exc.detail))


def _gallery(request: HttpRequest) -> Gallery:
    gallery: Gallery = request.app.state.gallery
    return gallery


def _entry(request: HttpRequest) -> ImageEntry:
    image_id: str = request.path_params["id"]
    entry: ImageEntry | None = _gallery(request).index.get(image_id)
    if entry is None:
        raise HTTPException(404, f"no image {image_id!r} in the gallery")
    return entry


def _inside(root: Path, relative: str) -> Path:
    """The file for an id, resolved now: 404 unless it is still inside the gallery."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, "no such image in the gallery")
    return path


# ---------------------------------------------------------------- the page
async def _page(_request: HttpRequest) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _static(request: HttpRequest) -> Response:
    name = request.path_params["name"]
    if name not in STATIC_TYPES:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(
        STATIC / name, media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"}
    )


async def _status(request: HttpRequest) -> Response:
    talk: Talk | None = request.app.state.talk
    state, detail = talk.state() if talk is not None else ("browse-only", "browse-only")
    return JSONResponse(
        {
            "talk": talk is not None,
            "state": state,
            "detail": detail,
            "secure": request.url.scheme == "https",
            "images": len(_gallery(request).index),
        }
    )


# ---------------------------------------------------------------- browsing
async def _list(request: HttpRequest) -> Response:
    params = request.query_params
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        return error(400, "limit must be a whole number, e.g. limit=60")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit must be between 1 and {MAX_LIMIT}")
    gallery = _gallery(request)
    try:
        entries, cursor = gallery.index.page(params.get("q", ""), params.get("before"), limit)
    except ValueError as exc:
        return error(400, str(exc))
    images = [gallery.present(entry) for entry in entries]
    return JSONResponse({"images": images, "next": cursor})


async def _detail(request: HttpRequest) -> Response:
    """The index keeps only what lists need: the sidecar is read now."""
    gallery = _gallery(request)
    listed = _entry(request)
    entry = await run_in_threadpool(read_entry, gallery.root, gallery.root / listed.id)
    return JSONResponse(gallery.present(entry or listed, detail=True))


async def _file(request: HttpRequest) -> Response:
    entry = _entry(request)
    path = _inside(_gallery(request).root, entry.id)
    download = request.query_params.get("download") == "1"
    return FileResponse(
        path,
        media_type=IMAGE_TYPES.get(entry.format, "application/octet-stream"),
        filename=path.name if download else None,
        content_disposition_type="attachment" if download else "inline",
        headers={"Cache-Control": IMMUTABLE},
    )


async def _thumb(request: HttpRequest) -> Response:
    gallery = _gallery(request)
    entry = _entry(request)
    _inside(gallery.root, entry.id)
    try:
        path = await run_in_threadpool(gallery.thumbs.path_for, entry)
    except FileNotFoundError:
        return error(404, f"{entry.id!r} is gone from the gallery")
    except ThumbnailError as exc:
        log.info("no thumbnail: %s", exc.why)
        return error(422, str(exc))
    return FileResponse(path, media_type="image/webp", headers={"Cache-Control": IMMUTABLE})


async def _favourite(request: HttpRequest) -> Response:
    gallery = _gallery(request)
    entry = _entry(request)
    wanted = request.method == "POST"
    now = await run_in_threadpool(gallery.state.set_favourite, entry.id, wanted)
    hub: EventHub = request.app.state.hub
    hub.publish("favourite", {"id": entry.id, "favourite": now})
    return JSONResponse({"id": entry.id, "favourite": now})


async def _delete(request: HttpRequest) -> Response:
    gallery = _gallery(request)
    entry = _entry(request)
    try:
        item = await run_in_threadpool(gallery.trash.delete, entry.id)
    except FileNotFoundError:
        return error(404, f"{entry.id!r} is already gone from the gallery")
    except TrashError as exc:
        return error(500, str(exc))
    await run_in_threadpool(gallery.index.refresh, entry.id)  # gone now, not at inotify's pace
    request.app.state.hub.publish("trash", {})
    return JSONResponse({"id": entry.id, "trashed": item.tid})


# ---------------------------------------------------------------- the trash
async def _trash_list(request: HttpRequest) -> Response:
    items = await run_in_threadpool(_trash_items, _gallery(request))
    return JSONResponse({"items": items})


def _trash_items(gallery: Gallery) -> list[dict[str, Any]]:
    out = []
    for item in gallery.trash.items():
        entry = read_entry(item.image.parent, item.image)
        out.append(
            {
                "tid": item.tid,
                "id": item.id,
                "deleted": item.deleted,
                "prompt": entry.prompt if entry is not None else "",
                "file": f"/trash-files/{item.tid}",
            }
        )
    return out


async def _trash_restore(request: HttpRequest) -> Response:
    gallery = _gallery(request)
    tid = request.path_params["tid"]
    _trashed(gallery, tid)
    try:
        image_id = await run_in_threadpool(gallery.trash.restore, tid)
    except NotInTrash:
        return error(404, f"nothing called {tid!r} in the trash (emptied, or already restored)")
    except TrashConflict as exc:
        return error(409, str(exc))
    except TrashError as exc:
        return error(500, str(exc))
    await run_in_threadpool(gallery.index.refresh, image_id)
    request.app.state.hub.publish("trash", {})
    return JSONResponse({"id": image_id})


async def _trash_empty(request: HttpRequest) -> Response:
    removed = await run_in_threadpool(_empty_trash, _gallery(request))
    request.app.state.hub.publish("trash", {})
    return JSONResponse({"removed": removed})


def _empty_trash(gallery: Gallery) -> int:
    """Gone for good, so their favourites go too (unless the name is in use again)."""
    ids = {item.id for item in gallery.trash.items()}
    removed = gallery.trash.empty()
    gallery.state.forget(i for i in ids if gallery.index.get(i) is None)
    return removed


async def _trash_file(request: HttpRequest) -> Response:
    path = _trashed(_gallery(request), request.path_params["tid"])
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


def _trashed(gallery: Gallery, tid: str) -> Path:
    """The trashed image of ``tid``; 404 unless it really lies inside the trash. A
    symlink planted there is neither served nor restored (a restore would hard-link
    what it points to into the gallery)."""
    try:
        path = gallery.trash.file(tid)
    except NotInTrash:
        raise HTTPException(404, f"nothing called {tid!r} in the trash") from None
    if not path.resolve().is_relative_to(gallery.trash.folder):
        raise HTTPException(404, f"nothing called {tid!r} in the trash")
    return path


# ---------------------------------------------------------------- live
async def _events(request: HttpRequest) -> Response:
    talk: Talk | None = request.app.state.talk
    state, detail = talk.state() if talk is not None else ("browse-only", "browse-only")
    stream = sse_stream(request.app.state.hub, {"state": state, "detail": detail})
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
