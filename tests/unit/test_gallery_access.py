"""Access to the gallery page: the middleware driven over HTTP around a small
Starlette app (real requests, real cookies), and the policy a bind address gets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from speech2image.gallery.access import (
    CSP,
    TOKEN_COOKIE,
    AccessMiddleware,
    AccessPolicy,
    RedactTokenFilter,
    location_without_token,
    policy_for,
)

TOKEN = "k3y-" + "x" * 40
SITE = "https://gallery.lan:8443"


# --- the policy ------------------------------------------------------------------


def test_a_loopback_policy_needs_no_token() -> None:
    policy = policy_for("127.0.0.1", 8765, TOKEN, secure=False)
    assert policy.token is None
    assert {"127.0.0.1", "localhost", "::1"} <= policy.allowed_hosts


def test_a_wildcard_policy_takes_any_host_but_needs_the_token() -> None:
    policy = policy_for("0.0.0.0", 8765, TOKEN, secure=True)
    assert policy.token == TOKEN
    assert policy.allowed_hosts == frozenset({"*"})


def test_a_specific_address_answers_as_itself_and_this_machine() -> None:
    policy = policy_for("192.168.1.5", 8765, TOKEN, secure=True)
    assert {"192.168.1.5", "localhost", socket.gethostname().lower()} <= policy.allowed_hosts
    assert "evil.example" not in policy.allowed_hosts


# --- the middleware over HTTP ----------------------------------------------------


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True, "method": request.method})


async def cached(request: Request) -> Response:
    return PlainTextResponse("x", headers={"Cache-Control": "max-age=60"})


async def stream(request: Request) -> Response:
    async def events() -> AsyncIterator[str]:
        for n in range(3):
            yield f"data: {n}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def tiny_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/x", ok, methods=["GET", "POST", "DELETE"]),
            Route("/cached", cached),
            Route("/events", stream),
        ]
    )


def remote_policy(secure: bool = True) -> AccessPolicy:
    return AccessPolicy(TOKEN, frozenset({"gallery.lan", "localhost"}), secure)


@pytest.fixture
def remote() -> Iterator[TestClient]:
    app = AccessMiddleware(tiny_app(), remote_policy())
    with TestClient(app, base_url=SITE, follow_redirects=False) as client:
        yield client


@pytest.fixture
def local() -> Iterator[TestClient]:
    app = AccessMiddleware(tiny_app(), policy_for("127.0.0.1", 8765, None, secure=False))
    with TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
        yield client


def assert_secured(response: Any) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"


def test_loopback_needs_no_token(local: TestClient) -> None:
    response = local.get("/x")
    assert response.status_code == 200
    assert_secured(response)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example"])
def test_a_foreign_host_name_is_refused(local: TestClient, host: str) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1."""
    response = local.get("/x", headers={"Host": host})
    assert response.status_code == 421
    assert "answers only as" in response.json()["error"]
    assert_secured(response)


@pytest.mark.parametrize("host", ["localhost:8765", "[::1]:8765", "127.0.0.1"])
def test_loopback_names_are_accepted(local: TestClient, host: str) -> None:
    assert local.get("/x", headers={"Host": host}).status_code == 200


def test_the_host_is_checked_before_the_token(remote: TestClient) -> None:
    response = remote.get(f"/x?token={TOKEN}", headers={"Host": "evil.example"})
    assert response.status_code == 421
    assert TOKEN_COOKIE not in response.headers.get("set-cookie", "")


def test_a_token_in_the_url_is_traded_for_a_cookie(remote: TestClient) -> None:
    response = remote.get(f"/x?a=1&token={TOKEN}&b=two%20words")

    assert response.status_code == 303
    assert response.headers["location"] == "/x?a=1&b=two%20words"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "secure", "path=/", "max-age=31536000"} <= attributes
    assert_secured(response)

    followed = remote.get("/x")  # the client now sends the cookie
    assert followed.status_code == 200
    assert followed.json() == {"ok": True, "method": "GET"}


def test_without_https_the_cookie_is_not_marked_secure() -> None:
    app = AccessMiddleware(tiny_app(), remote_policy(secure=False))
    with TestClient(app, base_url="http://gallery.lan:8765", follow_redirects=False) as client:
        response = client.get(f"/x?token={TOKEN}")
    assert response.status_code == 303
    attributes = {p.strip().lower() for p in response.headers["set-cookie"].split(";")}
    assert "secure" not in attributes
    assert "httponly" in attributes


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Cookie": f"{TOKEN_COOKIE}=wrong-token-wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
    ],
)
def test_a_missing_or_wrong_token_is_refused(remote: TestClient, headers: dict[str, str]) -> None:
    response = remote.get("/x", headers=headers)
    assert response.status_code == 401
    assert "--print-url" in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_secured(response)


def test_a_wrong_token_in_the_url_is_refused_and_sets_nothing(remote: TestClient) -> None:
    response = remote.get("/x?token=wrong-token-wrong-token")
    assert response.status_code == 401
    assert "set-cookie" not in response.headers


def test_a_browser_without_the_token_gets_a_page_without_script(remote: TestClient) -> None:
    response = remote.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "access token" in response.text
    assert "<script" not in response.text.lower()
    assert "`speech2image gallery --print-url`" in response.text
    assert_secured(response)


def test_a_bearer_token_works(remote: TestClient) -> None:
    response = remote.post("/x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers


@pytest.fixture
def authorised(remote: TestClient) -> TestClient:
    remote.cookies.set(TOKEN_COOKIE, TOKEN, domain="gallery.lan")
    return remote


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://gallery.lan:8443"},  # another scheme is another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_origin_changes_are_refused(
    authorised: TestClient, method: str, headers: dict[str, str]
) -> None:
    response = authorised.request(method, "/x", headers=headers)
    assert response.status_code == 403
    assert "cross-origin request refused" in response.json()["error"]
    assert_secured(response)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": SITE},
        {"Origin": SITE, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
        {},  # curl and scripts send neither
    ],
)
def test_same_origin_and_plain_clients_may_change(
    authorised: TestClient, headers: dict[str, str]
) -> None:
    for method in ("POST", "DELETE"):
        assert authorised.request(method, "/x", headers=headers).status_code == 200


def test_reading_from_another_site_is_not_an_origin_question(authorised: TestClient) -> None:
    response = authorised.get("/x", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


def test_cross_origin_changes_are_refused_on_loopback_too(local: TestClient) -> None:
    response = local.post("/x", headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert local.post("/x", headers={"Origin": "http://127.0.0.1:8765"}).status_code == 200


def test_no_cors_preflight_is_answered(authorised: TestClient) -> None:
    response = authorised.options("/x", headers={"Origin": "https://evil.example"})
    assert response.status_code == 405
    assert_secured(response)


def test_every_answer_is_secured(authorised: TestClient) -> None:
    missing = authorised.get("/nothing-here")
    assert missing.status_code == 404
    assert_secured(missing)

    events = authorised.get("/events")
    assert events.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert_secured(events)

    own = authorised.get("/cached")
    assert own.headers["cache-control"] == "max-age=60"  # the app's own choice stays
    assert_secured(own)


def test_the_redirect_never_leaves_the_site() -> None:
    assert location_without_token("//evil.example/x", "token=t") == "/evil.example/x"
    assert location_without_token("/", f"token={TOKEN}") == "/"
    assert location_without_token("/a%20b", "q=fox&token=t&tok=1") == "/a%20b?q=fox&tok=1"


def test_websockets_are_closed(local: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, local.websocket_connect("/ws"):
        pass
    assert closed.value.code == 1008


def test_lifespan_passes_through() -> None:
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = AccessMiddleware(Starlette(lifespan=lifespan), remote_policy())
    with TestClient(app, base_url=SITE):
        assert started == [True]


def test_a_stream_is_passed_on_as_it_is_sent() -> None:
    """Server-sent events must reach the client while the app is still sending
    (Starlette's BaseHTTPMiddleware, for one, would hold them back)."""

    async def run() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        first_chunk_out = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
            await asyncio.wait_for(first_chunk_out.wait(), timeout=5)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def send(message: Any) -> None:
            sent.append(message)
            if message.get("body"):
                first_chunk_out.set()

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/events",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8765")],
        }
        policy = policy_for("127.0.0.1", 8765, None, secure=False)
        await AccessMiddleware(app, policy)(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    assert (b"x-content-type-options", b"nosniff") in sent[0]["headers"]


def test_log_lines_never_show_the_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", f"/x?q=fox&token={TOKEN}"),
        None,
    )
    assert RedactTokenFilter().filter(record)
    assert TOKEN not in record.getMessage()
    assert "q=fox&token=***" in record.getMessage()
