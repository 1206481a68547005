"""What an off-loopback gallery needs before it starts: the access token kept in the
config directory, and the HTTPS certificate (the user's own, or one made and kept)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509

from speech2image.gallery.access import (
    AccessError,
    ensure_certificate,
    is_loopback,
    load_or_create_token,
    token_file,
)
from speech2image.gallery.credentials import (
    CERT_FILE,
    KEY_FILE,
    certificate_names,
    fingerprint,
    renewal_reason,
)

TOKEN = "k3y-" + "x" * 40

# --- names and the token file ----------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST.", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("gallery.lan", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_token_is_made_private_once_and_then_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = token_file(tmp_path / "config")

    first = load_or_create_token("", path)

    assert path == tmp_path / "config" / "gallery-token"
    assert len(first) >= 40
    assert mode(path) == 0o600
    assert load_or_create_token("", path) == first
    assert [p.name for p in path.parent.iterdir()] == ["gallery-token"]  # no temp left
    assert first not in caplog.text


def test_a_configured_token_wins_and_no_file_is_made(tmp_path: Path) -> None:
    path = tmp_path / "gallery-token"
    assert load_or_create_token(f"  {TOKEN} ", path) == TOKEN
    assert not path.exists()


@pytest.mark.parametrize("bad", ["short", "has a space in it here", 'quote"inside-it-xxxxxxx'])
def test_a_configured_token_that_cannot_be_a_cookie_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(AccessError, match=r"\[gallery\] token"):
        load_or_create_token(bad, tmp_path / "gallery-token")


def test_a_token_file_others_can_read_is_made_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gallery-token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o644)

    assert load_or_create_token("", path) == TOKEN

    assert mode(path) == 0o600
    assert "made it private" in caplog.text
    assert TOKEN not in caplog.text


def test_an_empty_token_file_gets_a_new_token(tmp_path: Path) -> None:
    path = tmp_path / "gallery-token"
    path.touch(mode=0o600)
    token = load_or_create_token("", path)
    assert len(token) >= 40
    assert path.read_text(encoding="utf-8").strip() == token


# --- the certificate -------------------------------------------------------------


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san_of(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        san.get_values_for_type(x509.DNSName),
        [str(a) for a in san.get_values_for_type(x509.IPAddress)],
    )


def test_a_self_signed_certificate_is_made_once_and_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    files = ensure_certificate(None, None, tmp_path, ["192.168.1.5", "gallery.lan"])

    assert (files.cert, files.key) == (tmp_path / CERT_FILE, tmp_path / KEY_FILE)
    assert mode(files.key) == 0o600
    cert = load_cert(files.cert)
    dns, ips = san_of(cert)
    assert {"gallery.lan", "localhost", socket.gethostname().lower()} <= set(dns)
    assert {"192.168.1.5", "127.0.0.1"} <= set(ips)
    assert cert.subject.rfc4514_string() == "CN=speech2image gallery"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=600) < lifetime < dt.timedelta(days=800)
    assert fingerprint(cert) in caplog.text

    again = ensure_certificate(None, None, tmp_path, ["192.168.1.5", "gallery.lan"])
    assert fingerprint(load_cert(again.cert)) == fingerprint(cert)


def test_a_certificate_is_made_anew_for_a_host_it_does_not_name(tmp_path: Path) -> None:
    first = fingerprint(load_cert(ensure_certificate(None, None, tmp_path, ["10.0.0.2"]).cert))
    files = ensure_certificate(None, None, tmp_path, ["10.0.0.3"])
    assert fingerprint(load_cert(files.cert)) != first
    assert "10.0.0.3" in san_of(load_cert(files.cert))[1]


def test_a_certificate_near_its_end_is_renewed(tmp_path: Path) -> None:
    cert = load_cert(ensure_certificate(None, None, tmp_path, ["gallery.lan"]).cert)
    dns, ips = certificate_names(["gallery.lan"], [])
    now = dt.datetime.now(dt.UTC)

    assert renewal_reason(cert, dns, ips, now) == ""
    late = cert.not_valid_after_utc - dt.timedelta(days=10)
    assert "expires" in renewal_reason(cert, dns, ips, late)
    other = [ipaddress.ip_address("10.9.9.9")]
    assert "10.9.9.9" in renewal_reason(cert, dns, [*ips, *other], now)


def test_wildcard_binds_are_not_certificate_names() -> None:
    dns, ips = certificate_names(["0.0.0.0", "::"], ["box"])
    assert dns == ["localhost", "box"]
    assert [str(a) for a in ips] == ["127.0.0.1"]


def test_the_users_own_certificate_is_used_as_given(tmp_path: Path) -> None:
    made = ensure_certificate(None, None, tmp_path / "made", ["gallery.lan"])
    own = ensure_certificate(made.cert, made.key, tmp_path / "unused", [])
    assert own == made
    assert not (tmp_path / "unused").exists()


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    made = ensure_certificate(None, None, tmp_path, ["gallery.lan"])
    missing = tmp_path / "nowhere" / "key.pem"
    with pytest.raises(AccessError, match=str(missing)):
        ensure_certificate(made.cert, missing, tmp_path, [])
    with pytest.raises(AccessError, match="both"):
        ensure_certificate(made.cert, None, tmp_path, [])
    with pytest.raises(AccessError, match="not a PEM certificate"):
        ensure_certificate(made.key, made.key, tmp_path, [])
