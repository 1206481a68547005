"""What a gallery served off loopback needs before it starts: its token and certificate.

The access token is kept in the user's config directory (mode 0600, never logged),
or set in ``[gallery] token``. HTTPS is needed off loopback because browsers grant
the microphone only to secure origins: the user's own certificate, or a self-signed
one made once, renewed before it expires or when the addresses it must name change,
and announced by its fingerprint so the user can check it in the browser's warning.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import secrets
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

TOKEN_FILE = "gallery-token"
CERT_FILE = "gallery-cert.pem"
KEY_FILE = "gallery-key.pem"
CERT_NAME = "speech2image gallery"
CERT_DAYS = 730
RENEW_BEFORE = dt.timedelta(days=30)
MIN_TOKEN_LENGTH = 16
# RFC 6265 cookie-octets: a token must survive being a cookie value unquoted.
TOKEN_CHARS = re.compile(r"[!#-+\--:<-\[\]-~]+")
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})


class AccessError(Exception):
    """The token or certificate cannot be set up; the message names the file and the fix."""


# --- names and the token ---------------------------------------------------------


def bare_host(host: str) -> str:
    """A host name or address as compared here: lowercase, no brackets, no final dot."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host.rstrip(".")


def token_file(config_dir: Path | None = None) -> Path:
    return (config_dir or platformdirs.user_config_path("speech2image")) / TOKEN_FILE


def load_or_create_token(configured: str, path: Path) -> str:
    """The configured token, else the one kept in ``path``, else a new one stored there."""
    if configured.strip():
        return _checked(configured.strip())
    token = _read_token(path)
    if token:
        return token
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A link never replaces a file: if another process made one meanwhile, use it.
        _write_atomic(path, token.encode() + b"\n", 0o600, replace=path.exists())
    except FileExistsError:
        return _read_token(path) or token
    except OSError as exc:
        raise AccessError(
            f"cannot store the gallery's access token in {path}: {exc.strerror}; "
            "fix that folder's permissions or set [gallery] token"
        ) from exc
    log.info("made a new gallery access token in %s", path)
    return token


def _checked(token: str) -> str:
    if len(token) < MIN_TOKEN_LENGTH or not TOKEN_CHARS.fullmatch(token):
        raise AccessError(
            f"[gallery] token must be at least {MIN_TOKEN_LENGTH} characters with no spaces, "
            "quotes, commas, semicolons or backslashes; leave it empty for a generated one, or "
            "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return token


def _read_token(path: Path) -> str:
    """The token kept in ``path`` ("" when there is none), its permissions made private."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); made it private (0600)", path, mode)
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise AccessError(
            f"cannot read the gallery's access token from {path}: {exc}; "
            "delete the file to make a new token, or set [gallery] token"
        ) from exc


def _write_atomic(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """``path`` appears complete with ``mode`` from the start, or not at all."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


# --- the HTTPS certificate -------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def ensure_certificate(
    cert: Path | None, key: Path | None, config_dir: Path, hosts: Sequence[str]
) -> TlsFiles:
    """The user's own certificate and key, or a self-signed pair made once and reused."""
    if cert is not None or key is not None:
        return _users_own(cert, key)
    files = TlsFiles(config_dir / CERT_FILE, config_dir / KEY_FILE)
    dns, ips = certificate_names(hosts, machine_names())
    now = dt.datetime.now(dt.UTC)
    try:
        existing = x509.load_pem_x509_certificate(files.cert.read_bytes())
        why = renewal_reason(existing, dns, ips, now) if files.key.is_file() else "no key"
    except (OSError, ValueError):
        existing, why = None, "none yet"
    if existing is None or why:
        existing = _make_certificate(files, dns, ips, now)
        log.info("made a self-signed certificate for the gallery (%s): %s", why, files.cert)
    log.info(
        "gallery certificate SHA-256 fingerprint (check it in the browser's warning): %s",
        fingerprint(existing),
    )
    return files


def _users_own(cert: Path | None, key: Path | None) -> TlsFiles:
    if cert is None or key is None:
        raise AccessError(
            "give both a TLS certificate and its key file, or neither for a self-signed one"
        )
    for what, path in (("certificate", cert), ("key", key)):
        try:
            with path.open("rb") as file:
                file.read(1)
        except OSError as exc:
            raise AccessError(
                f"the TLS {what} file {path} cannot be read ({exc.strerror}); "
                "fix the path or its permissions"
            ) from exc
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as exc:
        raise AccessError(f"{cert} is not a PEM certificate: {exc}") from exc
    log.info("gallery certificate %s, SHA-256 fingerprint %s", cert, fingerprint(loaded))
    return TlsFiles(cert, key)


def machine_names() -> list[str]:
    """This machine's names, and the address it reaches other machines from."""
    names = [socket.gethostname(), socket.getfqdn()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:  # connecting UDP sends nothing; it only picks the outgoing interface
            probe.connect(("192.0.2.1", 9))
            names.append(str(probe.getsockname()[0]))
        except OSError:
            pass
    return names


def certificate_names(
    hosts: Sequence[str], machine: Sequence[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(DNS names, addresses) the certificate must name: the hosts, localhost, this machine."""
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in [*hosts, "localhost", "127.0.0.1", *machine]:
        name = bare_host(raw)
        if name in WILDCARD_BINDS:
            continue
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if name not in dns:
                dns.append(name)
            continue
        if address not in ips and not address.is_unspecified:
            ips.append(address)
    return dns, ips


def renewal_reason(
    cert: x509.Certificate,
    dns: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: dt.datetime,
) -> str:
    """Why a kept certificate cannot serve ("" when it can)."""
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return "the old one expires on " + cert.not_valid_after_utc.date().isoformat()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the old one names no hosts"
    have_dns = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    missing = [n for n in dns if n not in have_dns]
    missing += [str(a) for a in ips if a not in san.get_values_for_type(x509.IPAddress)]
    return f"the old one does not name {', '.join(missing)}" if missing else ""


def _make_certificate(
    files: TlsFiles,
    dns: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    now: dt.datetime,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(a) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))  # tolerate a client clock behind ours
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        files.key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_atomic(files.key, key_pem, 0o600, replace=True)
        _write_atomic(
            files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, replace=True
        )
    except OSError as exc:
        raise AccessError(
            f"cannot store the gallery's certificate in {files.key.parent}: {exc.strerror}; "
            "fix that folder's permissions or give your own certificate and key"
        ) from exc
    return cert


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 as browsers show it: colon-separated uppercase hex."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
