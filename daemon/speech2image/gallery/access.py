"""Who may use the gallery page: per-request checks, as one pure ASGI middleware.

On loopback (the default) only this machine can connect, so no token is needed; the
Host check still applies, because a web page elsewhere can make a browser send
requests to 127.0.0.1 under a name it controls (DNS rebinding). Off loopback every
request carries the token (see :mod:`.credentials`): the first visit brings it in
the URL and trades it for an HttpOnly cookie, so it leaves the address bar at once.

State changes come only by POST/DELETE from the page's own origin: another site open
in the same browser cannot delete or generate. Every answer carries headers that
keep the page from being framed, sniffed or given inline script.
"""

from __future__ import annotations

import enum
import hmac
import html
import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote_plus

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..configcheck import is_loopback
from .credentials import (
    CERT_NAME,
    WILDCARD_BINDS,
    AccessError,
    TlsFiles,
    bare_host,
    ensure_certificate,
    load_or_create_token,
    machine_names,
    token_file,
)

__all__ = [
    "TOKEN_COOKIE",
    "AccessError",
    "AccessMiddleware",
    "AccessPolicy",
    "TlsFiles",
    "ensure_certificate",
    "is_loopback",
    "load_or_create_token",
    "policy_for",
    "token_file",
]

log = logging.getLogger(__name__)

TOKEN_COOKIE = "speech2image_token"
COOKIE_MAX_AGE = 365 * 24 * 3600
ANY_HOST = "*"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
TOKEN_NEEDED = (
    "this gallery needs its access token: open the address `speech2image gallery "
    "--print-url` prints, or send the token as `Authorization: Bearer <token>`"
)


# --- request checks --------------------------------------------------------------


@dataclass(frozen=True)
class AccessPolicy:
    token: str | None  # None on loopback: no token needed
    allowed_hosts: frozenset[str]  # Host header names accepted; ANY_HOST: all
    secure: bool  # served over HTTPS (the cookie gets Secure)


def policy_for(host: str, port: int, token: str | None, secure: bool) -> AccessPolicy:
    """What requests to a server bound to ``host``:``port`` must show."""
    if is_loopback(host):
        return AccessPolicy(None, LOOPBACK_NAMES | {bare_host(host)}, secure)
    if bare_host(host) in WILDCARD_BINDS:
        return AccessPolicy(token, frozenset({ANY_HOST}), secure)
    names = {bare_host(host), *LOOPBACK_NAMES}
    for machine in machine_names():
        name = bare_host(machine)
        names.add(name)
        if not _is_address(name):  # "box.lan" is also reached as "box" and "box.local"
            short = name.split(".")[0]
            names |= {short, short + ".local"}
    log.debug("gallery on %s:%d answers to %s", host, port, sorted(names))
    return AccessPolicy(token, frozenset(names), secure)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_of(value: str) -> str:
    """The host part of a ``Host`` header value, compared the way ``allowed_hosts`` is."""
    value = value.strip().lower()
    if value.startswith("["):
        return bare_host(value.split("]", 1)[0] + "]")
    name, colon, port = value.rpartition(":")
    return bare_host(name if colon and port.isdigit() and ":" not in name else value)


def check_host(headers: Headers, policy: AccessPolicy) -> str | None:
    """Why the ``Host`` header is refused (DNS rebinding protection), or None."""
    if ANY_HOST in policy.allowed_hosts:
        return None
    allowed = {bare_host(name) for name in policy.allowed_hosts}
    if host_of(headers.get("host", "")) in allowed:
        return None
    names = ", ".join(sorted(policy.allowed_hosts))
    return f"this page answers only as {names}: open it by one of those names"


def check_origin(method: str, headers: Headers, policy: AccessPolicy) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    if method in SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is not None:
        scheme = "https" if policy.secure else "http"
        own = f"{scheme}://{headers.get('host', '')}"
        if _origin_key(origin) == _origin_key(own):
            return None
        return "cross-origin request refused: change the gallery only from its own page"
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in {"same-origin", "none"}:
        return "cross-origin request refused: change the gallery only from its own page"
    return None


def _origin_key(origin: str) -> str:
    origin = origin.strip().lower()
    for default in ("http://", ":80"), ("https://", ":443"):
        if origin.startswith(default[0]) and origin.endswith(default[1]):
            return origin[: -len(default[1])]
    return origin


class TokenCheck(enum.Enum):
    OK = "ok"
    SET_COOKIE = "set-cookie"  # a valid token in the URL: trade it for a cookie
    REFUSED = "refused"


def query_token(query: str) -> str | None:
    """The ``token`` parameter of a query string, or None."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value
    return None


def check_token(method: str, headers: Headers, query: str, policy: AccessPolicy) -> TokenCheck:
    """Whether the request shows the token: cookie, ``Authorization: Bearer`` or query."""
    if policy.token is None:
        return TokenCheck.OK
    expected = policy.token.encode()
    in_query = query_token(query)
    if in_query is not None and hmac.compare_digest(in_query.encode(), expected):
        return TokenCheck.SET_COOKIE if method in SAFE_METHODS else TokenCheck.OK
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    shown = [credential.strip()] if scheme.lower() == "bearer" else []
    for header in headers.getlist("cookie"):
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == TOKEN_COOKIE:
                shown.append(value.strip().strip('"'))
    # Compare every candidate: how many there are is not secret, which one matched is.
    matches = [hmac.compare_digest(c.encode(), expected) for c in shown]
    return TokenCheck.OK if any(matches) else TokenCheck.REFUSED


def location_without_token(raw_path: str, query: str) -> str:
    """Where the token-trading redirect goes: same (encoded) path and query, minus ``token``."""
    kept = [p for p in query.split("&") if p and unquote_plus(p.split("=", 1)[0]) != "token"]
    # "//host" would be a protocol-relative URL to another site: one leading slash only.
    location = "/" + raw_path.lstrip("/")
    return location + ("?" + "&".join(kept) if kept else "")


def redact(text: str) -> str:
    """``text`` with any ``token=`` value hidden, for log lines (uvicorn's access log)."""
    return re.sub(r"(token=)[^&\s\"']*", r"\1***", text)


class RedactTokenFilter(logging.Filter):
    """Hides ``token=`` values in records' arguments (add it to ``uvicorn.access``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def secured_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's headers with the security headers forced and ``no-store`` by default."""
    forced = {name for name, _ in SECURITY_HEADERS}
    kept = [(k, v) for k, v in raw if k.lower() not in forced]
    if not any(k.lower() == b"cache-control" for k, _ in raw):
        kept.append((b"cache-control", b"no-store"))
    return kept + list(SECURITY_HEADERS)


def refusal(scope: Scope, policy: AccessPolicy) -> Response | None:
    """The answer that stops this request before the app, or None to let it through."""
    headers = Headers(scope=scope)
    method = str(scope["method"]).upper()
    why = check_host(headers, policy)
    if why:
        log.info("refused a request for host %r: %s", headers.get("host", ""), why)
        return JSONResponse({"error": why}, status_code=421)
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    token = check_token(method, headers, query, policy)
    if token is TokenCheck.REFUSED:
        return _token_needed(method, headers)
    if method == "OPTIONS":
        return JSONResponse(
            {"error": "this server answers no cross-origin (CORS) requests"},
            status_code=405,
            headers={"Allow": "GET, HEAD, POST, DELETE"},
        )
    why = check_origin(method, headers, policy)
    if why:
        log.info("refused a cross-origin %s request", method)
        return JSONResponse({"error": why}, status_code=403)
    if token is TokenCheck.SET_COOKIE and policy.token is not None:
        raw = scope.get("raw_path")
        path = bytes(raw).decode("latin-1") if raw else quote(str(scope["path"]))
        response = RedirectResponse(location_without_token(path, query), 303)
        response.set_cookie(
            TOKEN_COOKIE,
            policy.token,
            max_age=COOKIE_MAX_AGE,
            path="/",
            secure=policy.secure,
            httponly=True,
            samesite="strict",
        )
        return response
    return None


def _token_needed(method: str, headers: Headers) -> Response:
    challenge = {"WWW-Authenticate": f'Bearer realm="{CERT_NAME}"'}
    if method in SAFE_METHODS and "text/html" in headers.get("accept", ""):
        page = (
            '<!doctype html><html lang="en"><meta charset="utf-8">'
            f"<title>{CERT_NAME}</title><h1>Access token needed</h1>"
            f"<p>{html.escape(TOKEN_NEEDED)}</p></html>"
        )
        return HTMLResponse(page, status_code=401, headers=challenge)
    return JSONResponse({"error": TOKEN_NEEDED}, status_code=401, headers=challenge)


class AccessMiddleware:
    """Pure ASGI (no ``BaseHTTPMiddleware``, which buffers and breaks server-sent events)."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # the gallery serves no websockets
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = secured_headers(list(message.get("headers", [])))
            await send(message)

        answer = refusal(scope, self.policy)
        if answer is not None:
            await answer(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)
