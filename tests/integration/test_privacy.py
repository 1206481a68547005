"""Privacy, checked on the real CLI: no audio on disk unless asked for, no prompt in the
logs at INFO and above (error messages that name a gallery file included), and no
network socket at all with the web page and Wyoming off.

Each run is hermetic: HOME, every XDG directory and TMPDIR point into the test's
folder, so whatever the daemon writes anywhere it may write lands where the test looks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import platformdirs
import pytest
import soundfile

from speech2image.config import WakeConfig
from speech2image.debug_audio import save_utterance
from speech2image.ledger import without_private
from speech2image.listening.wake_models import wake_model_dir
from speech2image.request import Request
from tests.integration.test_gallery_faults import mount_tmpfs
from tests.support import concat, data_audio, run_cli, silence, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
ConfigFile = Callable[[str], Path]
CLI = [sys.executable, "-m", "speech2image.cli"]
# What a sound file starts with: WAV, FLAC, Ogg (Vorbis, Opus), AIFF, and a raw NumPy dump.
AUDIO_MAGIC = ((b"RIFF", b"WAVE"), (b"fLaC", b""), (b"OggS", b""), (b"FORM", b"AIF"))
NUMPY_MAGIC = b"\x93NUMPY"


def holds_audio(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    if head.startswith(NUMPY_MAGIC):
        return True
    return any(head.startswith(magic) and marker in head[8:12] for magic, marker in AUDIO_MAGIC)


def audio_files(root: Path) -> set[Path]:
    """Every file under ``root`` (symbolic links not followed) that holds sound."""
    found = set()
    for folder, _, names in os.walk(root):
        found |= {Path(folder) / name for name in names if holds_audio(Path(folder) / name)}
    return found


def private_env(root: Path) -> dict[str, str]:
    """HOME, XDG_* and TMPDIR inside ``root``; the moderation model's cached export is
    copied in (the user cache is per HOME), the wake models are named in the config."""
    home = root / "home"
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "TMPDIR": str(root / "tmp"),
    }
    for key in ("XDG_RUNTIME_DIR", "TMPDIR"):
        Path(env[key]).mkdir(mode=0o700, parents=True)
    cache = Path(env["XDG_CACHE_HOME"]) / "speech2image"
    for export in platformdirs.user_cache_path("speech2image").glob("minilm-onnx-*"):
        if export.is_dir():
            shutil.copytree(export, cache / export.name)
    return env


def private_config(config_file: ConfigFile, gallery: Path, extra: str = "") -> Path:
    wake = wake_model_dir(WakeConfig())  # the test's own user cache, read before HOME moves
    return config_file(f'[wake]\nmodel_dir = "{wake}"\n[gallery]\ndir = "{gallery}"\n{extra}')


def spoken_file(folder: Path) -> Path:
    """Two requests: a harmless one ("a lighthouse on a cliff at sunset") and a toxic one."""
    benign = data_audio("espeak/hey_jarvis_benign_en+f3.wav")
    toxic = data_audio("espeak/hey_jarvis_toxic_en-us.wav")
    audio = concat(silence(0.5), benign, silence(2.0), toxic, silence(2.0))
    folder.mkdir(parents=True, exist_ok=True)
    return write_wav(folder / "spoken.wav", audio)


def run_private(tmp_path: Path, config: Path, *flags: str) -> tuple[list[dict[str, Any]], str]:
    wav = spoken_file(tmp_path / "input")
    result = run_cli(
        [*flags, "run", "--config", str(config), "--input", str(wav)],
        env=private_env(tmp_path / "env"),
    )
    assert result.returncode == 0, result.stderr
    return result.events, result.stderr


# ------------------------------------------------------------------ audio on disk


def test_no_audio_is_written_by_default(tmp_path: Path, config_file: ConfigFile) -> None:
    events, _ = run_private(tmp_path, private_config(config_file, tmp_path / "gallery"))
    assert len([e for e in events if e["type"] == "utterance"]) == 2
    assert [e["type"] for e in events].count("image") == 1  # the pipeline did run
    assert audio_files(tmp_path) == {tmp_path / "input" / "spoken.wav"}


@pytest.mark.parametrize("where", ["configured", "state-dir"])
def test_save_audio_keeps_one_wav_per_utterance(
    tmp_path: Path, config_file: ConfigFile, where: str
) -> None:
    configured = tmp_path / "recordings"
    folder = (
        configured
        if where == "configured"
        else tmp_path / "env" / "home" / ".local" / "state" / "speech2image" / "debug-audio"
    )
    setting = f'audio_dir = "{configured}"\n' if where == "configured" else ""
    config = private_config(
        config_file, tmp_path / "gallery", f"[debug]\nsave_audio = true\n{setting}"
    )
    events, _ = run_private(tmp_path, config)

    utterances = {e["id"]: e for e in events if e["type"] == "utterance"}
    assert len(utterances) == 2
    saved = audio_files(tmp_path) - {tmp_path / "input" / "spoken.wav"}
    assert saved == {folder / f"{request_id}.wav" for request_id in utterances}
    for request_id, utterance in utterances.items():
        info = soundfile.info(folder / f"{request_id}.wav")
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / 16000 == pytest.approx(utterance["duration_s"], abs=1e-3)
        assert (folder / f"{request_id}.wav").stat().st_mode & 0o077 == 0  # owner only


def test_save_utterance_is_atomic_and_a_failure_only_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    audio = data_audio("espeak/prompt_2_en-us.wav")
    path = save_utterance(tmp_path / "debug", "abc123", audio)
    assert path == tmp_path / "debug" / "abc123.wav"
    assert sorted(p.name for p in path.parent.iterdir()) == ["abc123.wav"]  # no temp left
    again, rate = soundfile.read(path, dtype="int16")
    assert rate == 16000
    assert (again == audio).all()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    assert save_utterance(blocker, "abc123", audio) is None
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "abc123" in warning.getMessage()


# ------------------------------------------------------------------ prompts in logs


def private_words(events: list[dict[str, Any]]) -> set[str]:
    """The words (four letters or more) of what was said; a gallery file's slug is made
    of them, so a file name in a log shows up too."""
    words = set()
    for event in events:
        if event["type"] == "transcript":
            words |= {w for w in re.findall(r"[a-z]+", event["text"].lower()) if len(w) >= 4}
    return words


def leaked(words: set[str], log: str) -> set[str]:
    lowered = log.lower()
    return {w for w in words if re.search(rf"(?<![a-z]){w}(?![a-z])", lowered)}


def test_prompts_stay_out_of_info_logs(tmp_path: Path, config_file: ConfigFile) -> None:
    config = private_config(config_file, tmp_path / "gallery")
    events, log = run_private(tmp_path / "quiet", config)
    words = private_words(events)
    assert {"lighthouse", "cliff", "sunset"} <= words
    assert [e["type"] for e in events].count("image") == 1
    assert "image written to" in log  # the gallery's INFO line names the date folder only
    assert leaked(words, log) == set()
    # With -v (DEBUG) the words may and do appear: the check above can see them.
    _, verbose = run_private(tmp_path / "verbose", config, "-v")
    assert {"lighthouse", "sunset"} <= leaked(words, verbose)


def test_without_private_blanks_the_prompt_its_slug_and_the_transcript() -> None:
    request = Request.start("microphone", "test").with_transcript(
        "A red fox sleeping under a cherry tree.", "en", 0.1
    )
    message = (
        "KeyError('a red fox sleeping under a cherry tree.') writing "
        "/g/2026-01-01/120000-a-red-fox-sleeping-under-a-cherry-tree-7.png"
    )
    assert without_private(message, request) == (
        "KeyError('<private>') writing /g/2026-01-01/120000-<private>-7.png"
    )
    short = Request.start("microphone", "test").with_transcript("a", "en", 0.1)
    assert without_private("a disk is full", short) == "a disk is full"  # too short to hide


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "small", "size=96k")


def fill(disk: Path, leave: int) -> None:
    """Fill a file system but ``leave`` bytes: room for a sidecar, not for a picture."""
    slack = disk / "slack"
    slack.write_bytes(b"\0" * leave)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    slack.unlink()


def test_a_gallery_error_names_the_folder_not_the_prompt(
    tmp_path: Path, config_file: ConfigFile, small_disk: Path
) -> None:
    gallery = small_disk / "gallery"
    size = "[image]\nwidth = 128\nheight = 128\n"  # a picture of ~40 KB: it cannot fit
    config = private_config(config_file, gallery, size)
    (gallery / ".tmp").mkdir(parents=True)
    fill(small_disk, 8192)
    events, log = run_private(tmp_path, config)

    (error,) = [e for e in events if e["type"] == "error"]
    assert error["stage"] == "gallery"
    assert "is full; nothing was written" in error["message"]
    assert f"gallery failed (request {error['id']}): the disk holding the gallery" in log
    words = private_words(events)
    assert "lighthouse" in words
    assert leaked(words, log) == set()
    assert [p for p in gallery.rglob("*") if p.is_file()] == []  # nothing partial


# ------------------------------------------------------------------ network


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the socket fds of ``pid`` and its descendants."""
    inodes = set()
    for process in [pid, *descendants(pid)]:
        try:
            fds = os.listdir(f"/proc/{process}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{process}/fd/{fd}")
            except OSError:
                continue
            if match := re.fullmatch(r"socket:\[(\d+)\]", target):
                inodes.add(match[1])
    return inodes


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *descendants(child)]
    return found


def table(pid: int, name: str) -> list[list[str]]:
    """The rows (split, no header) of /proc/<pid>/net/<name>: its network namespace's."""
    try:
        lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()
    except FileNotFoundError:  # a protocol this kernel does not have
        return []
    return [line.split() for line in lines[1:] if line.strip()]


INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6", "packet")


def network_report(pid: int) -> tuple[dict[str, int], set[str]]:
    """Sockets of the inet families in the process's namespace, and its socket fds that
    are neither unix nor netlink sockets."""
    inodes = socket_inodes(pid)
    inet = {name: len(rows) for name in INET_TABLES if (rows := table(pid, name))}
    local = {row[6] for row in table(pid, "unix") if len(row) > 6}
    local |= {row[-1] for row in table(pid, "netlink")}
    other = (inodes - local) & socket_inodes(pid)  # still open: not closed meanwhile
    return inet, other


def test_no_network_socket_with_the_web_page_and_wyoming_off(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    config = private_config(config_file, tmp_path / "gallery")
    wav = spoken_file(tmp_path / "input")
    events_path = tmp_path / "events.jsonl"
    command = ["unshare", "--net", *CLI, "run", "--config", str(config), "--input", str(wav)]
    command += ["--realtime", "--events", str(events_path)]
    samples: list[tuple[bool, dict[str, int], set[str]]] = []
    with (tmp_path / "daemon.log").open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stderr=log, env=os.environ | private_env(tmp_path))
        try:
            ours = os.readlink("/proc/self/ns/net")
            while process.poll() is None:
                listening = events_path.exists() and events_path.stat().st_size > 0
                with contextlib.suppress(OSError):  # until unshare has made the namespace,
                    if os.readlink(f"/proc/{process.pid}/ns/net") != ours:  # ours shows
                        samples.append((listening, *network_report(process.pid)))
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, (tmp_path / "daemon.log").read_text(encoding="utf-8")
    events = [json.loads(line) for line in events_path.read_text(encoding="utf-8").splitlines()]
    assert [e["type"] for e in events].count("image") == 1  # it worked, with no network
    assert sum(listening for listening, _, _ in samples) >= 20  # looked while it worked
    assert [s for s in samples if s[1]] == []  # no TCP, UDP, raw or packet socket ...
    assert [s for s in samples if s[2]] == []  # ... and no fd of any family but unix/netlink


# Every way a process reaches a peer: an inet connect (TCP, or UDP like a DNS lookup),
# or a datagram sent to an inet address. strace prints the address family.
REACHES_OUT = re.compile(r"\b(connect|sendto|sendmsg)\(.*\bAF_INET6?\b")


def test_nothing_in_the_daemon_tries_to_reach_the_network(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    """Not one connection attempt, from Python or from native code (ONNX Runtime 1.32
    sends telemetry from C++ unless told not to), traced by the kernel's view of it."""
    strace = shutil.which("strace")
    assert strace, "strace is not installed; `make test` installs it (apt)"
    config = private_config(config_file, tmp_path / "gallery")
    wav = spoken_file(tmp_path / "input")
    trace = tmp_path / "trace.txt"
    env = os.environ | private_env(tmp_path)
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the daemon must turn it off itself
    command = [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace)]
    command += [*CLI, "run", "--config", str(config), "--input", str(wav), "--events", "-"]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert '"type": "image"' in done.stdout  # it did all its work
    calls = trace.read_text(encoding="utf-8").splitlines()
    assert [line for line in calls if REACHES_OUT.search(line)] == []

    # The same trace does see a lookup: a name resolved is a datagram to a DNS server.
    lookup = [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace)]
    lookup += [
        sys.executable,
        "-c",
        "import socket, contextlib\n"
        "with contextlib.suppress(OSError): socket.getaddrinfo('speech2image.invalid', 80)",
    ]
    subprocess.run(lookup, env=env, check=True, timeout=60)
    assert any(REACHES_OUT.search(line) for line in trace.read_text(encoding="utf-8").splitlines())
