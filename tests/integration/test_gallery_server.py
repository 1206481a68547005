"""The gallery served for real: uvicorn on a free port (in-process GalleryServer, and
the ``speech2image gallery`` command in a subprocess), real sockets, real inotify.

A picture written to the folder reaches an open event stream without a reload; the
server stops with pages still connected; a taken port and a network bind are handled
as the README says (exit 78; a warning, HTTPS and the token, which is never logged).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from speech2image.config import EX_CONFIG
from speech2image.gallery.index import STOP_WITHIN_S
from speech2image.gallery.server import STOP_TIMEOUT_S, GalleryServer, ServeOptions
from speech2image.gallery.writer import GalleryWriter
from tests.support import drawn_request
from tests.unit.test_gallery_web import EventReader, pixels, url_id, wait_for_subscriber

pytestmark = [pytest.mark.integration]
log = logging.getLogger(__name__)

CLI = [sys.executable, "-m", "speech2image.cli", "gallery"]
SERVING = re.compile(r"gallery: serving (https?://\S+/)")
EVENT_CAP_S = 5.0  # how long a test waits; the product's goal is one second
# GalleryServer.stop: uvicorn's graceful join, a forced one, then the observer's join.
STOP_DEADLINE_S = STOP_TIMEOUT_S + 1.0 + STOP_WITHIN_S


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GalleryServer]:
    gallery = tmp_path / "gallery"
    GalleryWriter(gallery).prepare()
    served = GalleryServer(ServeOptions(root=gallery, host="127.0.0.1", port=0))
    served.start()
    try:
        yield served
    finally:
        served.stop()


def write(root: Path, prompt: str, seed: int) -> str:
    request = drawn_request(prompt, seed, 16)
    path = GalleryWriter(root).write(pixels(seed), request, dt.datetime.now())
    return path.relative_to(root).as_posix()


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """``GET target`` on the request line exactly as given (httpx would tidy ``..``)."""
    address = httpx.URL(url)
    with socket.create_connection((address.host, address.port or 80), timeout=5) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {address.netloc.decode()}\r\n".encode())
        conn.sendall(b"Connection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


# --- in-process: GalleryServer -------------------------------------------------------


def test_the_page_and_the_images_are_served(server: GalleryServer) -> None:
    image = write(server.gallery.root, "a red fox", 1)
    server.gallery.index.refresh(image)
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert 'src="/static/app.js"' in page.text
        assert page.headers["x-content-type-options"] == "nosniff"
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        listed = client.get("/api/images").json()["images"]
        assert [i["id"] for i in listed] == [image]
        file = client.get(f"/files/{url_id(image)}")
        assert file.content == (server.gallery.root / image).read_bytes()


@pytest.mark.parametrize(
    "target",
    [
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files//etc/passwd",
        "/static/../web.py",
        "/files/.state/gallery.sqlite3",
        "/trash-files/..%2F.state%2Fgallery.sqlite3",
    ],
)
def test_traversal_over_a_real_socket_is_404(server: GalleryServer, target: str) -> None:
    status, body = raw_get(server.url, target)
    assert status in (400, 404)
    assert b"root:" not in body
    assert b"SQLite format" not in body
    assert b"def create_app" not in body


def test_a_written_picture_reaches_an_open_stream_without_a_reload(
    server: GalleryServer,
) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/api/events") as response,
    ):
        reader = EventReader(response)
        assert reader.next()[0] == "state"
        wait_for_subscriber(server.hub)
        written = time.monotonic()
        image = write(server.gallery.root, "a blue whale", 2)
        added = reader.until("added", EVENT_CAP_S)
        took = time.monotonic() - written
        log.info("a written picture reached the stream after %.3f s", took)
        print(f"file landed -> SSE 'added': {took:.3f} s")
        assert added["id"] == image
        assert added["prompt"] == "a blue whale"
        (server.gallery.root / image).unlink()
        assert reader.until("removed", EVENT_CAP_S) == {"id": image}
        server.hub.publish("bye", {})
        reader.thread.join(5)


def test_stop_cuts_open_streams_and_returns_within_its_deadline(server: GalleryServer) -> None:
    port = httpx.URL(server.url).port
    client = httpx.Client(base_url=server.url, timeout=10)
    with client, client.stream("GET", "/api/events") as response:
        reader = EventReader(response)  # never sent "bye": the stream is left open
        assert reader.next()[0] == "state"
        wait_for_subscriber(server.hub)
        began = time.monotonic()
        server.stop()
        took = time.monotonic() - began
        log.info("stop() with a page connected took %.2f s", took)
        assert took < STOP_DEADLINE_S + 1.0
        reader.thread.join(5)
        assert not reader.thread.is_alive()  # the page's stream ended
        assert isinstance(reader.cut, httpx.HTTPError)  # cut, as a server gone away does
    assert port is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --- the command -------------------------------------------------------------------


def start_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def served_url(process: subprocess.Popen[str]) -> tuple[str, list[str]]:
    """The address the command announces on stderr, and the lines before it."""
    assert process.stderr is not None
    lines: list[str] = []
    for line in process.stderr:
        lines.append(line)
        found = SERVING.search(line)
        if found:
            return found[1], lines
    raise AssertionError(f"the gallery never said it was serving: {''.join(lines)}")


def stop_cli(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    return out, err


@pytest.mark.slow
def test_the_command_serves_until_sigterm(tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    image = write(gallery, "a lighthouse", 3)
    process = start_cli(["--dir", str(gallery), "--port", "0"])
    try:
        url, before = served_url(process)
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url) as client:
            assert client.get("/").status_code == 200
            status = client.get("/api/status").json()
            assert (status["talk"], status["state"]) == (False, "browse-only")
            assert [i["id"] for i in client.get("/api/images").json()["images"]] == [image]
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        said = "".join(before) + process.stderr.read()  # read() keeps what served_url buffered
        assert process.wait(timeout=15) == 0, said
        assert len(SERVING.findall(said)) == 1, said  # once, not again by another layer
    finally:
        if process.poll() is None:
            stop_cli(process)


@pytest.mark.slow
def test_a_port_in_use_is_exit_78_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "--dir", str(tmp_path / "g"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == EX_CONFIG
    assert f"port {port}" in result.stderr
    assert "already in use" in result.stderr


@pytest.mark.slow
def test_a_network_bind_warns_serves_https_and_needs_the_token(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    gallery = tmp_path / "gallery"
    image = write(gallery, "a harbour at dawn", 4)
    process = start_cli(["--dir", str(gallery), "--host", "0.0.0.0", "--port", "0"], env)
    try:
        url, before = served_url(process)
        assert url.startswith("https://127.0.0.1:")
        assert "reachable from other machines" in "".join(before)
        printed = subprocess.run(
            [*CLI, "--dir", str(gallery), "--host", "0.0.0.0", "--print-url"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
            check=True,
        ).stdout
        token = printed.strip().rsplit("?token=", 1)[1]
        assert len(token) >= 16
        kept = tmp_path / "config" / "speech2image"
        assert (kept / "gallery-token").read_text().strip() == token
        trusted = ssl.create_default_context(cafile=kept / "gallery-cert.pem")
        with httpx.Client(base_url=url, verify=trusted) as client:
            assert client.get("/api/images").status_code == 401
            wrong = client.get("/api/images", headers={"Authorization": "Bearer " + "x" * 43})
            assert wrong.status_code == 401
            first = client.get(f"/?token={token}")
            assert first.status_code == 303
            assert "secure" in first.headers["set-cookie"].lower()
            assert client.get("/", follow_redirects=True).status_code == 200
            listed = client.get("/api/images").json()["images"]  # the cookie, from now on
            assert [i["id"] for i in listed] == [image]
            assert client.get("/api/status").json()["secure"] is True
        bearer = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, verify=trusted, headers=bearer) as script:
            assert script.get(f"/files/{url_id(image)}").status_code == 200
    finally:
        out, err = stop_cli(process) if process.poll() is None else ("", "")
    assert token not in out
    assert token not in err
    assert token not in "".join(before)


def test_the_listening_socket_says_tcp(tmp_path: Path) -> None:
    """asyncio turns Nagle off only for a socket whose protocol is TCP; with protocol 0
    every keep-alive answer waited ~40 ms for the client's delayed ACK."""
    server = GalleryServer(ServeOptions(root=tmp_path, host="127.0.0.1", port=0))
    sock = server._bind()
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
        server.gallery.state.close()
