"""The gallery's HTTP API, route by route, over a real folder: GalleryWriter pairs and a
JPEG copied in by hand, the real index, trash, thumbnails and page state, behind the
real access middleware. Traversal attempts are sent as uvicorn hands them to the app
(percent-decoded once, never normalised), because httpx would tidy ``..`` away."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from starlette.testclient import TestClient
from starlette.types import Message

from speech2image.gallery.access import CSP, AccessMiddleware, AccessPolicy, policy_for
from speech2image.gallery.live import EventHub
from speech2image.gallery.talk import Talk
from speech2image.gallery.web import STATIC, Gallery, create_app
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request

LOCAL = "http://127.0.0.1:8765"
WHEN = dt.datetime(2026, 11, 25, 14, 0, 0)
PROMPTS = (
    "a fox cub in the snow",
    "a red balloon over a city",
    "a lighthouse at night",
    "a blue whale in deep water",
    "a red fox under a cherry tree",
)  # written in this order, a minute apart: the last is the newest
SECRET = b"secret outside prompt"


@dataclass
class Site:
    """A gallery served to a TestClient; ``ids`` newest first (the JPEG is oldest)."""

    client: TestClient
    gallery: Gallery
    hub: EventHub
    root: Path
    outside: Path
    ids: list[str]

    @property
    def jpeg(self) -> str:
        return self.ids[-1]

    def listed(self, query: str = "") -> list[str]:
        response = self.client.get("/api/images", params={"q": query, "limit": 200})
        assert response.status_code == 200, response.text
        return [image["id"] for image in response.json()["images"]]


def url_id(image_id: str) -> str:
    return "/".join(quote(part, safe="") for part in image_id.split("/"))


def pixels(seed: int, size: int = 16) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def write_image(root: Path, prompt: str, seed: int, when: dt.datetime) -> str:
    path = GalleryWriter(root).write(pixels(seed), drawn_request(prompt, seed, 16), when)
    return path.relative_to(root).as_posix()


def fill_gallery(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Five pairs, a hand-copied JPEG, a secret PNG outside and symlinks to it."""
    root = tmp_path / "gallery"
    GalleryWriter(root).prepare()
    made = [
        write_image(root, prompt, seed, WHEN + dt.timedelta(minutes=seed))
        for seed, prompt in enumerate(PROMPTS)
    ]
    jpeg = root / "camera" / "holiday.jpg"
    jpeg.parent.mkdir()
    pixels(99, 40).save(jpeg, "JPEG")
    old = (WHEN - dt.timedelta(days=1)).timestamp()
    os.utime(jpeg, (old, old))
    outside = tmp_path / "outside"
    outside.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{SECRET.decode()}\nSteps: 1, Seed: 1, Size: 8x8")
    pixels(7, 8).save(outside / "secret.png", "PNG", pnginfo=info)
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    return root, outside, [*reversed(made), "camera/holiday.jpg"]


@pytest.fixture
def gallery_dir(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    return fill_gallery(tmp_path)


def serve(
    root: Path,
    policy: AccessPolicy,
    base_url: str = LOCAL,
    talk: Talk | None = None,
) -> Iterator[tuple[TestClient, Gallery, EventHub]]:
    gallery = Gallery.open(root)
    gallery.index.scan()
    hub = EventHub()
    app = AccessMiddleware(create_app(gallery, hub, talk=talk), policy)
    try:
        with TestClient(app, base_url=base_url, follow_redirects=False) as client:
            yield client, gallery, hub
    finally:
        gallery.state.close()


@pytest.fixture
def site(gallery_dir: tuple[Path, Path, list[str]]) -> Iterator[Site]:
    root, outside, ids = gallery_dir
    policy = policy_for("127.0.0.1", 8765, None, secure=False)
    for client, gallery, hub in serve(root, policy):
        yield Site(client, gallery, hub, root, outside, ids)


def raw_request(
    client: TestClient, method: str, target: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, bytes]:
    """``target`` exactly as a client put it on the request line; the scope uvicorn
    builds from it (``path`` percent-decoded once, ``..`` left alone)."""
    raw_path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1:8765"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
        "state": {},
    }

    async def call() -> tuple[int, bytes]:
        status, body, done, sent = 0, bytearray(), asyncio.Event(), False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body"):
                    done.set()

        await client.app(scope, receive, send)
        return status, bytes(body)

    assert client.portal is not None
    return client.portal.call(call)


class Streamed(Protocol):
    """A streamed response, of TestClient (httpx2) or of httpx over a real socket."""

    def iter_lines(self) -> Iterator[str]: ...


class EventReader:
    """Reads a server-sent event stream in a thread, so a test waits with a deadline.

    Ends at a ``bye`` event (publish one before leaving the stream's ``with``)."""

    def __init__(self, response: Streamed) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self.thread.start()

    def _read(self, response: Streamed) -> None:
        name = ""
        try:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.events.put((name, json.loads(line.removeprefix("data: "))))
                    if name == "bye":
                        return
        except Exception as exc:  # the server cut the stream (it stopped)
            self.cut = exc

    cut: Exception | None = None

    def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None

    def until(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        """The data of the next ``name`` event (others before it are passed over)."""
        while True:
            got, data = self.next(timeout)
            if got == name:
                return data


def wait_for_subscriber(hub: EventHub, count: int = 1) -> None:
    """The stream subscribes just after sending its first event; publish after that."""
    for _ in range(500):
        if hub.subscribers >= count:
            return
        threading.Event().wait(0.01)
    raise AssertionError("the event stream never subscribed to the hub")


# --- the page ----------------------------------------------------------------------


def test_the_page_and_everything_it_loads_are_served_with_their_types(site: Site) -> None:
    page = site.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script: the CSP would block it
    html = page.text
    assets = [part.split('"')[0] for part in html.split('="/static/')[1:]]
    assert "app.js" in assets
    assert "style.css" in assets
    for name in assets:
        response = site.client.get(f"/static/{name}")
        assert response.status_code == 200, f"/static/{name} (index.html loads it)"
        assert response.content == (STATIC / name).read_bytes()
        wanted = "text/javascript" if name.endswith(".js") else "text/css"
        assert response.headers["content-type"].startswith(wanted), name


@pytest.mark.parametrize("name", ["nope.js", "README.md", "__init__.py", ".hidden", "app.JS"])
def test_an_unknown_static_file_is_404(site: Site, name: str) -> None:
    response = site.client.get(f"/static/{name}")
    assert response.status_code == 404
    assert "error" in response.json()


def test_status_says_browse_only_without_the_daemon(site: Site) -> None:
    status = site.client.get("/api/status").json()
    assert status["talk"] is False
    assert status["state"] == "browse-only"
    assert status["secure"] is False


# --- browsing ----------------------------------------------------------------------


def test_the_list_is_newest_first_with_urls_and_favourites(site: Site) -> None:
    body = site.client.get("/api/images").json()
    assert [image["id"] for image in body["images"]] == site.ids
    assert body["next"] is None
    newest = body["images"][0]
    assert newest["prompt"] == PROMPTS[-1]
    assert newest["favourite"] is False
    assert newest["thumb"] == f"/thumbs/{url_id(newest['id'])}"
    assert newest["file"] == f"/files/{url_id(newest['id'])}"
    assert "sidecar" not in newest  # lists stay small


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_paging_with_next_lists_every_image_exactly_once(site: Site, limit: int) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(len(site.ids) + 1):
        body = site.client.get("/api/images", params=params).json()
        assert len(body["images"]) <= limit
        seen += [image["id"] for image in body["images"]]
        if body["next"] is None:
            break
        params = {"limit": limit, "before": body["next"]}
    assert seen == site.ids


@pytest.mark.parametrize(
    ("query", "prompts"),
    [
        ("red", ["a red fox under a cherry tree", "a red balloon over a city"]),
        ("RED Fox", ["a red fox under a cherry tree"]),
        ("fox", ["a red fox under a cherry tree", "a fox cub in the snow"]),
        ("fox  snow", ["a fox cub in the snow"]),
        ("unicorn", []),
    ],
)
def test_search_needs_every_word_in_any_case(site: Site, query: str, prompts: list[str]) -> None:
    body = site.client.get("/api/images", params={"q": query}).json()
    assert [image["prompt"] for image in body["images"]] == prompts
    assert body["next"] is None


def test_search_pages_too(site: Site) -> None:
    first = site.client.get("/api/images", params={"q": "red", "limit": 1}).json()
    assert [i["prompt"] for i in first["images"]] == ["a red fox under a cherry tree"]
    params = {"q": "red", "limit": 1, "before": first["next"]}
    second = site.client.get("/api/images", params=params).json()
    assert [i["prompt"] for i in second["images"]] == ["a red balloon over a city"]
    assert second["next"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": "1.5"},
        {"before": "yesterday"},
        {"before": "1700000000.0"},
        {"before": "nan|2026-11-25/x.png"},
        {"before": "inf|x"},
        {"before": "1700000000.0|"},
    ],
)
def test_a_bad_limit_or_cursor_is_400_saying_what(site: Site, params: dict[str, str]) -> None:
    response = site.client.get("/api/images", params=params)
    assert response.status_code == 400
    assert next(iter(params)) in response.json()["error"]


def test_the_largest_limit_is_allowed(site: Site) -> None:
    assert site.client.get("/api/images", params={"limit": 200}).status_code == 200


def test_detail_has_the_sidecar_and_page_state(site: Site) -> None:
    newest = site.ids[0]
    detail = site.client.get(f"/api/images/{url_id(newest)}").json()
    assert detail["id"] == newest
    assert detail["prompt"] == PROMPTS[-1]
    assert detail["sidecar"]["prompt"] == PROMPTS[-1]
    assert detail["settings"]["Seed"] == str(len(PROMPTS) - 1)
    assert detail["favourite"] is False
    assert detail["file"] == f"/files/{url_id(newest)}"
    jpeg = site.client.get(f"/api/images/{url_id(site.jpeg)}").json()
    assert (jpeg["format"], jpeg["sidecar"], jpeg["prompt"]) == ("JPEG", None, "")


def test_detail_of_an_unknown_image_is_404(site: Site) -> None:
    response = site.client.get("/api/images/2026-11-25/no-such-image.png")
    assert response.status_code == 404
    assert "no-such-image.png" in response.json()["error"]


def test_files_come_with_their_type_and_as_attachments_on_request(site: Site) -> None:
    for image_id, kind in ((site.ids[0], "image/png"), (site.jpeg, "image/jpeg")):
        inline = site.client.get(f"/files/{url_id(image_id)}")
        assert inline.status_code == 200
        assert inline.headers["content-type"] == kind
        assert inline.content == (site.root / image_id).read_bytes()
        assert not inline.headers.get("content-disposition", "").startswith("attachment")
        download = site.client.get(f"/files/{url_id(image_id)}", params={"download": "1"})
        assert download.headers["content-disposition"].startswith("attachment")
        assert image_id.rsplit("/", 1)[-1] in download.headers["content-disposition"]
        assert download.content == inline.content


def test_thumbnails_are_small_webp_cached_in_the_hidden_folder(site: Site) -> None:
    for image_id in (site.ids[0], site.jpeg):
        response = site.client.get(f"/thumbs/{url_id(image_id)}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        thumb = Image.open(BytesIO(response.content))
        assert thumb.format == "WEBP"
        assert max(thumb.size) <= 320
    assert len(list((site.root / ".thumbs").glob("*.webp"))) == 2
    assert site.client.get("/thumbs/2026-11-25/no-such-image.png").status_code == 404


def test_favourites_are_set_cleared_and_listed(site: Site) -> None:
    for image_id in (site.ids[1], site.jpeg):  # a hand-copied JPEG can be a favourite too
        response = site.client.post(f"/api/favourites/{url_id(image_id)}")
        assert response.json() == {"id": image_id, "favourite": True}
    images = site.client.get("/api/images").json()["images"]
    assert {i["id"] for i in images if i["favourite"]} == {site.ids[1], site.jpeg}
    assert site.client.get(f"/api/images/{url_id(site.jpeg)}").json()["favourite"] is True
    cleared = site.client.delete(f"/api/favourites/{url_id(site.jpeg)}")
    assert cleared.json() == {"id": site.jpeg, "favourite": False}
    assert site.gallery.state.favourites() == {site.ids[1]}
    assert site.client.post("/api/favourites/2026-11-25/no-such.png").status_code == 404


def test_a_get_never_changes_anything(site: Site) -> None:
    image = url_id(site.ids[0])
    assert site.client.get(f"/api/favourites/{image}").status_code == 405
    assert site.client.post(f"/api/images/{image}").status_code == 405
    assert site.gallery.state.favourites() == frozenset()
    assert (site.root / site.ids[0]).is_file()


# --- delete and the trash -----------------------------------------------------------


def delete(site: Site, image_id: str) -> str:
    response = site.client.delete(f"/api/images/{url_id(image_id)}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == image_id
    tid: str = body["trashed"]
    return tid


def test_delete_moves_the_pair_to_the_trash_and_restore_brings_it_back(site: Site) -> None:
    image_id = site.ids[0]
    original = (site.root / image_id).read_bytes()
    tid = delete(site, image_id)
    assert image_id not in site.listed()
    assert not (site.root / image_id).exists()
    assert not (site.root / image_id).with_suffix(".json").exists()
    assert (site.root / ".trash" / tid / image_id).read_bytes() == original
    assert site.client.get(f"/files/{url_id(image_id)}").status_code == 404
    assert site.client.get(f"/api/images/{url_id(image_id)}").status_code == 404
    items = site.client.get("/api/trash").json()["items"]
    assert [(i["tid"], i["id"], i["prompt"]) for i in items] == [(tid, image_id, PROMPTS[-1])]
    assert items[0]["file"] == f"/trash-files/{tid}"
    trashed = site.client.get(f"/trash-files/{tid}")
    assert (trashed.status_code, trashed.content) == (200, original)
    assert trashed.headers["content-type"] == "image/png"
    restored = site.client.post(f"/api/trash/{tid}/restore")
    assert restored.json() == {"id": image_id}
    assert (site.root / image_id).read_bytes() == original
    assert (site.root / image_id).with_suffix(".json").is_file()
    assert site.listed() == site.ids
    assert site.client.get("/api/trash").json() == {"items": []}
    assert site.client.get(f"/trash-files/{tid}").status_code == 404


def test_a_favourite_survives_the_trash(site: Site) -> None:
    image_id = site.ids[2]
    site.client.post(f"/api/favourites/{url_id(image_id)}")
    tid = delete(site, image_id)
    site.client.post(f"/api/trash/{tid}/restore")
    assert site.client.get(f"/api/images/{url_id(image_id)}").json()["favourite"] is True


def test_restore_over_a_name_taken_again_is_409_and_changes_nothing(site: Site) -> None:
    image_id = site.ids[1]
    tid = delete(site, image_id)
    newcomer = site.root / image_id
    newcomer.write_bytes((site.root / site.ids[0]).read_bytes())
    response = site.client.post(f"/api/trash/{tid}/restore")
    assert response.status_code == 409
    assert "move or delete that file" in response.json()["error"]
    assert newcomer.read_bytes() == (site.root / site.ids[0]).read_bytes()
    assert [i["tid"] for i in site.client.get("/api/trash").json()["items"]] == [tid]


def test_emptying_the_trash_removes_everything_for_good(site: Site) -> None:
    tids = [delete(site, site.ids[0]), delete(site, site.jpeg)]
    assert site.client.delete("/api/trash").json() == {"removed": 2}
    assert site.client.get("/api/trash").json() == {"items": []}
    assert not any((site.root / ".trash").iterdir())
    for tid in tids:
        assert site.client.post(f"/api/trash/{tid}/restore").status_code == 404
        assert site.client.get(f"/trash-files/{tid}").status_code == 404
    assert site.client.delete("/api/trash").json() == {"removed": 0}


def test_deleting_what_is_not_there_is_404(site: Site) -> None:
    assert site.client.delete("/api/images/2026-11-25/no-such.png").status_code == 404
    tid = delete(site, site.ids[0])
    assert site.client.delete(f"/api/images/{url_id(site.ids[0])}").status_code == 404
    assert site.client.post("/api/trash/1700000000-0123abcd/restore").status_code == 404
    assert site.client.post(f"/api/trash/{tid}/restore").status_code == 200


# --- traversal: nothing outside the gallery's images is ever served ---------------------


@dataclass(frozen=True)
class Target:
    """A gallery with everything an attacker would like to read, served read-mostly."""

    site: Site
    names: dict[str, str]  # placeholders of the attack paths


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root, outside, ids = fill_gallery(tmp_path_factory.mktemp("attacked"))
    trash = root / ".trash"
    evil = trash / "1700000000-deadbeef"  # a trash item that is a symlink out
    evil.mkdir(parents=True)
    (evil / "evil.png").symlink_to(outside / "secret.png")
    (trash / "1700000001-deadbeef").symlink_to(outside, target_is_directory=True)
    policy = policy_for("127.0.0.1", 8765, None, secure=False)
    for client, gallery, hub in serve(root, policy):
        entry = gallery.index.get(ids[0])
        assert entry is not None
        thumb = gallery.thumbs.path_for(entry).name
        item = gallery.trash.delete(ids[1])
        gallery.index.refresh(ids[1])
        names = {
            "outside": str(outside).lstrip("/"),
            "thumb": thumb,
            "trashed": f"{item.tid}/{item.id}",
            "tid": item.tid,
        }
        yield Target(Site(client, gallery, hub, root, outside, ids), names)


ID_ATTACKS = [
    "../outside/secret.png",
    "..%2Foutside%2Fsecret.png",
    "%2e%2e/outside/secret.png",
    "%2E%2E%2Foutside%2Fsecret.png",
    "%252e%252e/outside/secret.png",
    "%252e%252e%252foutside%252fsecret.png",
    "2026-11-25/../../outside/secret.png",
    "camera/./../../outside/secret.png",
    "/{outside}/secret.png",
    "%2F{outside}%2Fsecret.png",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "link.png",
    "linked/secret.png",
    ".state/gallery.sqlite3",
    "%2Estate/gallery.sqlite3",
    ".thumbs/{thumb}",
    ".trash/{trashed}",
    ".trash/1700000000-deadbeef/evil.png",
    ".tmp",
    "camera/holiday.jpg%00.png",
    "camera%2F..%2F..%2Foutside%2Fsecret.png",
]
ID_ROUTES = [
    ("GET", "/files/"),
    ("GET", "/thumbs/"),
    ("GET", "/api/images/"),
    ("DELETE", "/api/images/"),
    ("POST", "/api/favourites/"),
    ("DELETE", "/api/favourites/"),
]
TID_ATTACKS = [
    "..",
    "%2e%2e",
    ".",
    "..%2F.state%2Fgallery.sqlite3",
    "%2e%2e%2f%2e%2e%2foutside%2fsecret.png",
    "{tid}%2F..%2F..%2F.state%2Fgallery.sqlite3",
    "%252e%252e",
    "/etc/passwd",
    "1700000000-deadbeef",  # its image is a symlink out of the gallery
    "1700000001-deadbeef",  # a symlinked folder
    "1700000000-deadbeef%00",
    "1700000000-DEADBEEF",
]
TID_ROUTES = [("GET", "/trash-files/{}"), ("POST", "/api/trash/{}/restore")]
STATIC_ATTACKS = [
    "/static/../daemon.py",
    "/static/..%2Fweb.py",
    "/static/%2e%2e%2fweb.py",
    "/static/%2e%2e",
    "/static/.",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/..%2F..%2Fconfig.py",
    "/static/%252e%252e%252fweb.py",
    "/static/__init__.py",
    "/..%2F..%2Fetc%2Fpasswd",
    "//etc/passwd",
]


def assert_refused(target: Target, method: str, path: str) -> None:
    status, body = raw_request(target.site.client, method, path)
    assert status in (400, 404), f"{method} {path} -> {status}"
    assert "error" in json.loads(body), f"{method} {path} served {body[:40]!r}"
    gallery = target.site.gallery
    assert (target.site.outside / "secret.png").is_file()
    assert gallery.state.favourites() == frozenset()
    assert len(gallery.trash.items()) == 1  # the real one; the planted symlink is no item


@pytest.mark.parametrize("attack", ID_ATTACKS)
@pytest.mark.parametrize(("method", "prefix"), ID_ROUTES)
def test_no_traversal_reaches_a_file_by_its_id(
    target: Target, method: str, prefix: str, attack: str
) -> None:
    assert_refused(target, method, prefix + attack.format(**target.names))


@pytest.mark.parametrize("attack", TID_ATTACKS)
@pytest.mark.parametrize(("method", "route"), TID_ROUTES)
def test_no_traversal_reaches_a_file_through_the_trash(
    target: Target, method: str, route: str, attack: str
) -> None:
    assert_refused(target, method, route.format(attack.format(**target.names)))


@pytest.mark.parametrize("path", STATIC_ATTACKS)
def test_no_traversal_reaches_the_package_or_the_system(target: Target, path: str) -> None:
    assert_refused(target, "GET", path)


def test_the_attacked_gallery_still_serves_its_own_images(target: Target) -> None:
    site = target.site
    assert site.listed() == [i for i in site.ids if i != site.ids[1]]
    assert raw_request(site.client, "GET", f"/files/{url_id(site.ids[0])}")[0] == 200
    assert raw_request(site.client, "GET", f"/trash-files/{target.names['tid']}")[0] == 200


def test_an_image_swapped_for_a_symlink_out_is_not_served(site: Site) -> None:
    image = site.root / site.ids[0]
    image.unlink()
    image.symlink_to(site.outside / "secret.png")  # the index has not seen the change
    for route in ("/files/", "/thumbs/"):
        response = site.client.get(route + url_id(site.ids[0]))
        assert response.status_code == 404
        assert SECRET not in response.content


# --- cross-origin: another site cannot change anything --------------------------------

CHANGES = [
    ("POST", "/api/favourites/{id}"),
    ("DELETE", "/api/favourites/{fav}"),
    ("DELETE", "/api/images/{id}"),
    ("POST", "/api/trash/{tid}/restore"),
    ("DELETE", "/api/trash"),
]
FOREIGN = [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://127.0.0.1:9999"},
    {"Origin": "https://127.0.0.1:8765"},
    {"Origin": "http://localhost.evil.example:8765"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
]


def snapshot(site: Site) -> tuple[object, ...]:
    files = sorted(p.relative_to(site.root) for p in site.root.rglob("*") if p.is_file())
    trash = [item.tid for item in site.gallery.trash.items()]
    return tuple(site.listed()), site.gallery.state.favourites(), trash, files


@pytest.mark.parametrize("headers", FOREIGN)
@pytest.mark.parametrize(("method", "route"), CHANGES)
def test_a_cross_origin_change_is_403_and_changes_nothing(
    site: Site, method: str, route: str, headers: dict[str, str]
) -> None:
    tid = delete(site, site.ids[2])
    site.client.post(f"/api/favourites/{url_id(site.ids[3])}")
    before = snapshot(site)
    path = route.format(id=url_id(site.ids[0]), fav=url_id(site.ids[3]), tid=tid)
    response = site.client.request(method, path, headers=headers)
    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]
    assert snapshot(site) == before


def test_the_pages_own_origin_may_change(site: Site) -> None:
    response = site.client.post(f"/api/favourites/{url_id(site.ids[0])}", headers={"Origin": LOCAL})
    assert response.json()["favourite"] is True


# --- live: the event stream ---------------------------------------------------------


def test_the_stream_says_the_state_first_then_every_change(site: Site) -> None:
    with site.client.stream("GET", "/api/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        assert reader.next() == ("state", {"state": "browse-only", "detail": "browse-only"})
        wait_for_subscriber(site.hub)
        new = write_image(site.root, "a green parrot", 42, dt.datetime.now())
        site.gallery.index.refresh(new)  # what the observer does when the file lands
        added = reader.until("added")
        assert (added["id"], added["prompt"], added["favourite"]) == (new, "a green parrot", False)
        assert added["thumb"] == f"/thumbs/{url_id(new)}"
        site.client.post(f"/api/favourites/{url_id(new)}")
        assert reader.until("favourite") == {"id": new, "favourite": True}
        site.client.delete(f"/api/images/{url_id(new)}")
        assert reader.until("removed") == {"id": new}
        assert reader.until("trash") == {}
        site.hub.publish("daemon", {"event": "transcript", "id": "r1", "text": "hello"})
        assert reader.until("daemon") == {"event": "transcript", "id": "r1", "text": "hello"}
        site.hub.publish("bye", {})
        reader.thread.join(5)
        assert not reader.thread.is_alive()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_page_that_leaves_is_unsubscribed_cleanly(site: Site) -> None:
    with site.client.stream("GET", "/api/events") as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        assert next(lines).startswith("retry:")
        wait_for_subscriber(site.hub)
    for _ in range(500):
        if site.hub.subscribers == 0:
            break
        threading.Event().wait(0.01)
    assert site.hub.subscribers == 0


def test_every_open_page_gets_the_event(site: Site) -> None:
    with (
        site.client.stream("GET", "/api/events") as first,
        site.client.stream("GET", "/api/events") as second,
    ):
        readers = [EventReader(first), EventReader(second)]
        for reader in readers:
            assert reader.next()[0] == "state"
        wait_for_subscriber(site.hub, 2)
        site.hub.publish("state", {"state": "drawing", "detail": "step 2/4"})
        for reader in readers:
            assert reader.until("state") == {"state": "drawing", "detail": "step 2/4"}
        site.hub.publish("bye", {})
        for reader in readers:
            reader.thread.join(5)


# --- off loopback: every request needs the token --------------------------------------

TOKEN = "t0ken-" + "y" * 40
SITE = "https://gallery.lan:8443"
ROUTES = [
    ("GET", "/"),
    ("GET", "/static/app.js"),
    ("GET", "/api/status"),
    ("GET", "/api/images?q=fox"),
    ("GET", "/api/images/{id}"),
    ("GET", "/files/{id}"),
    ("GET", "/thumbs/{id}"),
    ("GET", "/api/trash"),
    ("GET", "/trash-files/{tid}"),
    ("GET", "/api/events"),
    ("POST", "/api/favourites/{id}"),
    ("DELETE", "/api/favourites/{id}"),
    ("DELETE", "/api/images/{id}"),
    ("POST", "/api/trash/{tid}/restore"),
    ("DELETE", "/api/trash"),
    ("POST", "/api/speak"),
    ("POST", "/api/generate"),
]
WRONG = [
    {},
    {"Authorization": "Bearer wrong-" + "y" * 40},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Cookie": "speech2image_token=nope"},
    {"Cookie": f"other={TOKEN}"},
    {"query": "token=nope"},
    {"query": "token="},
]


@dataclass
class Remote:
    site: Site
    tid: str

    def path(self, route: str) -> str:
        return route.format(id=url_id(self.site.ids[0]), tid=self.tid)


def serve_remote(tmp_path: Path) -> Iterator[Remote]:
    """A gallery on a wildcard bind (one image in the trash), as another machine sees it."""
    root, outside, ids = fill_gallery(tmp_path)
    tid = Gallery.open(root).trash.delete(ids.pop(1)).tid
    policy = policy_for("0.0.0.0", 8443, TOKEN, secure=True)
    for client, gallery, hub in serve(root, policy, base_url=SITE):
        yield Remote(Site(client, gallery, hub, root, outside, ids), tid)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    yield from serve_remote(tmp_path)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """Shared by the refusals: each checks that it changed nothing."""
    yield from serve_remote(tmp_path_factory.mktemp("locked"))


def state_of(remote: Remote) -> tuple[object, ...]:
    gallery = remote.site.gallery
    return len(gallery.index), gallery.state.favourites(), len(gallery.trash.items())


@pytest.mark.parametrize("credentials", WRONG)
@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_a_missing_or_wrong_token_is_401_on_every_route(
    locked: Remote, method: str, route: str, credentials: dict[str, str]
) -> None:
    remote = locked
    headers = {k: v for k, v in credentials.items() if k != "query"}
    path = remote.path(route)
    if "query" in credentials:
        path += ("&" if "?" in path else "?") + credentials["query"]
    before = state_of(remote)
    with remote.site.client.stream(method, path, headers={**headers, "Origin": SITE}) as response:
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "set-cookie" not in response.headers
        assert TOKEN.encode() not in response.read()
    assert state_of(remote) == before


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_the_bearer_token_opens_every_route(remote: Remote, method: str, route: str) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}", "Origin": SITE}
    with remote.site.client.stream(method, remote.path(route), headers=bearer) as response:
        wanted = 501 if route in ("/api/speak", "/api/generate") else 200  # browse-only
        assert response.status_code == wanted
        if route == "/api/events":
            assert next(response.iter_lines()).startswith("retry:")
            remote.site.hub.publish("bye", {})


def test_the_token_in_the_url_becomes_a_cookie_that_opens_the_rest(remote: Remote) -> None:
    client = remote.site.client
    image = url_id(remote.site.ids[0])
    response = client.get(f"/files/{image}?download=1&token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/files/{image}?download=1"
    cookie = response.headers["set-cookie"].lower()
    assert all(flag in cookie for flag in ("secure", "httponly", "samesite=strict", "path=/"))
    assert TOKEN.lower() in cookie
    assert client.get(response.headers["location"]).status_code == 200
    status = client.get("/api/status").json()
    assert status["secure"] is True
    changed = client.post(f"/api/favourites/{image}", headers={"Origin": SITE})
    assert changed.json()["favourite"] is True
    refused = client.post(f"/api/favourites/{image}", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403  # the cookie is no pass for another site


def test_a_script_may_send_the_token_in_the_query_of_a_change(remote: Remote) -> None:
    image = url_id(remote.site.ids[0])
    response = remote.site.client.delete(f"/api/images/{image}?token={TOKEN}")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
