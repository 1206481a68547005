"""A private, throw-away PulseAudio server with a file-fed virtual microphone.

Why this exists
---------------
The end-to-end tests must exercise the *real* capture path of the daemon --
``sounddevice`` -> PortAudio -> ALSA ``pulse`` plugin -> PulseAudio -- with no
sound card and no mocks.  This module starts a PulseAudio server owned by the
test run, gives it a virtual microphone whose samples come from the test, and
tears everything down again.

Design decisions (all measured with PulseAudio 16.1 on Debian 12, as root):

* **Private server, private directories.**  ``HOME``, ``XDG_RUNTIME_DIR``,
  ``XDG_CONFIG_HOME``, ``PULSE_RUNTIME_PATH`` and ``PULSE_STATE_PATH`` of the
  server point into a fresh temp dir, so it never touches or talks to a
  desktop's server and parallel sessions do not collide.  ``-n`` skips
  ``default.pa`` so only the modules below are loaded (no ALSA/udev/X11/D-Bus
  modules, no ``module-suspend-on-idle``).
* **Running as root.**  Without ``--system`` PulseAudio only *warns* ("This
  program is not intended to be run as root") and works; ``--system`` is not
  wanted (it needs the ``pulse`` user and ignores our directories).
  ``--use-pid-file=no`` avoids the per-user pid-file lock, ``--realtime=no
  --high-priority=no`` avoid pointless ``setrlimit`` failures.
* **One socket, anonymous auth.**  ``module-native-protocol-unix
  socket=<tmp>/pulse.sock auth-anonymous=1`` means clients need no cookie.
  Clients find it only through ``PULSE_SERVER=unix:<sock>``; a client.conf
  with ``autospawn = no`` (via ``PULSE_CLIENTCONFIG``) guarantees a client
  fails loudly instead of spawning a second, root-owned server in the real
  ``$HOME`` if ours is gone.
* **Virtual mic = ``module-pipe-source``** (s16le, 16 kHz, mono, named
  ``virtmic``, made the default source).  The module reads a FIFO *as soon as
  data is available* (it has no clock of its own) and hands the bytes on
  unchanged, so with a client that records s16/16 kHz/mono there is no
  resampling and the recording is **bit-exact**.  The alternative (null sink +
  ``pacat`` + ``.monitor``) goes through a mixer/resampler, adds an extra
  process, and an idle null sink's monitor delivers in ~2 s blocks (this is
  where "first callback 1-2 s late" comes from; measured 2.3 s), so it was
  not used.  With the pipe source and the feeder running, the first callback
  arrives after 5-20 ms.  Consequences handled here:

  - the module *creates* the FIFO itself and refuses to load if the path
    already exists (``mkfifo(...): File exists``), and it unlinks it again on
    unload -- so never pre-create it and re-open it after every (re)plug;
  - while no stream records from the source, PulseAudio does not read the FIFO:
    what is written waits in the pipe (up to its 64 KiB, ~2 s) and a varying
    part of it reaches the next stream the moment it starts (measured: 0.23 s
    of one test's tone ahead of the next test's probe).  A real microphone
    keeps nothing, so :class:`VirtualMic` empties the FIFO when it starts and
    stops, and tests feed only once the recorder runs;
  - with no writer or an empty FIFO the source produces **nothing**: the
    capture stream gets no callbacks at all (a stall, not silence).  The feeder
    therefore keeps writing silence in real time whenever it has nothing else
    to write;
  - pacing is done by the writer (``_Feeder``): 20 ms chunks on a monotonic
    clock.  Each chunk (640 bytes) is below ``PIPE_BUF`` so writes are atomic.
    The FIFO is opened ``O_NONBLOCK`` so a missing reader (``ENXIO``), a
    vanished FIFO (``ENOENT``), a full pipe (``EAGAIN``) or an unloaded module
    (``EPIPE``) can never block teardown.

* **A null sink** (``module-null-sink sink_name=nullsink``) is loaded so that
  the server has a default sink like a real one.  Its ``.monitor`` is a second
  source, which matters for unplugging -- see :meth:`PulseServer.unplug_mic`.

sounddevice configuration
-------------------------
Record with ``device="pulse"`` (or ``"default"``: the ALSA config hook
``/etc/alsa/conf.d/99-pulse.conf`` redirects ``default`` to PulseAudio when a
server is reachable), ``samplerate=16000, channels=1, dtype="int16"``; the
default latency is fine.  PortAudio enumerates devices in ``Pa_Initialize()``,
which ``sounddevice`` calls at import time, so ``PULSE_SERVER`` must be set
*before* the recording process imports ``sounddevice`` -- trivially true for a
subprocess started with :attr:`PulseServer.env`; in-process use
:func:`reinit_portaudio` after changing ``os.environ``.  Stop streams with
``abort()``: ``stop()`` waits for buffers to drain and can hang when the FIFO
runs empty.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import numpy.typing as npt

#: Sample format of the virtual microphone -- what the daemon records.
SAMPLE_RATE = 16000
CHANNELS = 1
#: Name of the virtual microphone source inside PulseAudio.
MIC_SOURCE = "virtmic"
#: What PulseAudio calls it (``device.description``), as the daemon names it.
MIC_DESCRIPTION = "Virtual Microphone"
#: The second, real source of :meth:`PulseServer.add_tone_source`.
TONE_SOURCE = "tonemic"
TONE_DESCRIPTION = "Tone Microphone"
TONE_HZ = 440
NULL_SINK = "nullsink"
#: Real-time chunk the feeder writes; 20 ms = 640 bytes < PIPE_BUF (atomic).
CHUNK_FRAMES = SAMPLE_RATE // 50

_START_TIMEOUT_S = 10.0
_PACTL_TIMEOUT_S = 5.0


class PulseError(RuntimeError):
    """The private PulseAudio server misbehaved; the message carries its log."""


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, resolved here in the parent (see :func:`_set_pdeathsig`)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Make the kernel SIGTERM pulseaudio if pytest dies without teardown.

    Runs between fork and exec.  Best effort: Linux only, silently skipped
    elsewhere.  Prevents orphaned servers after e.g. ``kill -9`` of pytest.
    ``prctl`` is looked up before the fork: a ``dlopen`` in the child of a
    process whose other thread is inside ``dlopen`` (PortAudio re-listing ALSA
    devices while a test restarts the server) aborts the child in ld.so
    ("Inconsistency detected by ld.so", exit code 127).
    """
    if _PRCTL is not None:
        pr_set_pdeathsig = 1
        _PRCTL(pr_set_pdeathsig, signal.SIGTERM)


def _tail(path: Path, max_chars: int = 6000) -> str:
    """Return the end of a (possibly binary-ish) log file for error messages."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-max_chars:]


@dataclass
class PulseServer:
    """A running private PulseAudio server (create with :meth:`start`).

    Attributes:
        workdir: Private temp dir holding socket, FIFO, runtime and state dirs.
            Kept short (``/tmp/...``) because a unix socket path is limited to
            107 bytes.
        log_path: Server log (debug level).  Lives outside ``workdir`` so that
            it survives teardown for post-mortem inspection.
        process: The ``pulseaudio`` child process.

    """

    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    _mic_module: int | None = field(default=None, repr=False)
    _sink_module: int | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------ setup
    @classmethod
    def start(
        cls,
        log_dir: Path,
        *,
        timeout: float = _START_TIMEOUT_S,
        workdir: Path | None = None,
    ) -> PulseServer:
        """Start the server and wait until it answers and the mic exists.

        Args:
            log_dir: Directory for ``pulseaudio.log`` (e.g. a pytest tmp dir).
            timeout: Seconds to wait for readiness before failing.
            workdir: A directory from :meth:`new_workdir` whose socket clients were
                already pointed at (:meth:`env_for`) while no server ran there;
                default: a fresh one.

        Raises:
            PulseError: If ``pulseaudio`` is missing, exits early or is not
                ready within ``timeout``; the message contains the log tail.

        """
        if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
            msg = "pulseaudio/pactl not installed (apt: pulseaudio pulseaudio-utils)"
            raise PulseError(msg)
        workdir = workdir or cls.new_workdir()
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "pulseaudio.log"
        server = cls(workdir=workdir, log_path=log_path, process=_launch(workdir, log_path))
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    @staticmethod
    def new_workdir() -> Path:
        """A private directory for a server: socket, FIFO, runtime, state, client.conf.

        Clients can be pointed at its socket (:meth:`env_for`) before any server
        runs there -- the audio server not running yet, as at a desktop login.
        """
        workdir = Path(tempfile.mkdtemp(prefix="s2i-pulse-"))
        for sub in ("runtime", "runtime/pulse", "state", "config", "home"):
            (workdir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        (workdir / "client.conf").write_text("autospawn = no\n")
        return workdir

    @staticmethod
    def env_for(workdir: Path) -> dict[str, str]:
        """:attr:`env` of a server in ``workdir``, running or not."""
        return {
            "PULSE_SERVER": f"unix:{workdir / 'pulse.sock'}",
            "PULSE_CLIENTCONFIG": str(workdir / "client.conf"),
        }

    def kill(self) -> None:
        """SIGKILL the server, as a crash does; ``workdir`` (the socket path) stays.

        Every client's connection and stream dies at once.  :meth:`relaunch`
        starts a new server on the same socket.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def relaunch(self, timeout: float = _START_TIMEOUT_S) -> None:
        """Start a new server on the same socket (after :meth:`kill`, or killing it now).

        A killed server leaves its FIFO behind and ``module-pipe-source`` refuses
        an existing path, so it is removed first.  Modules loaded with ``pactl``
        (an extra source) are gone; the mic and null sink are back, mic default.
        """
        self.kill()
        self.fifo.unlink(missing_ok=True)
        with self._lock:
            self._mic_module = self._sink_module = None
        self.process = _launch(self.workdir, self.log_path, append=True)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Poll ``pactl`` until the server answers and ``virtmic`` exists.

        A plain "socket exists" check is not enough: the socket file appears
        before the modules are loaded, and a stale socket can linger.
        """
        deadline = time.monotonic() + timeout
        last_err = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"pulseaudio exited with code {self.process.returncode}")
            if self.socket.exists():
                res = self._pactl_raw("list", "short", "sources", timeout=2.0)
                if res.returncode == 0 and f"\t{MIC_SOURCE}\t" in res.stdout:
                    self._pactl("set-default-source", MIC_SOURCE)
                    self._mic_module = self._find_module("module-pipe-source")
                    self._sink_module = self._find_module("module-null-sink")
                    return
                last_err = res.stderr.strip()
            time.sleep(0.05)
        self._fail(f"pulseaudio not ready after {timeout:.0f} s ({last_err})")

    def _fail(self, what: str) -> None:
        """Raise :class:`PulseError` with the server log attached."""
        msg = f"{what}\n--- {self.log_path} (tail) ---\n{_tail(self.log_path)}"
        raise PulseError(msg)

    # ------------------------------------------------------------- properties
    @property
    def socket(self) -> Path:
        """Path of the server's native-protocol unix socket."""
        return self.workdir / "pulse.sock"

    @property
    def fifo(self) -> Path:
        """FIFO that feeds the virtual mic (created/removed by PulseAudio)."""
        return self.workdir / "mic.fifo"

    @property
    def env(self) -> dict[str, str]:
        """Variables a client needs to use this server (and nothing else).

        ``PULSE_SERVER`` selects the server; ``PULSE_CLIENTCONFIG`` disables
        autospawn.  ``HOME`` etc. are deliberately *not* overridden so the
        daemon under test keeps its normal environment.
        """
        return self.env_for(self.workdir)

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return ``os.environ`` + :attr:`env` (+ ``extra``) for a subprocess."""
        env = dict(os.environ)
        env.update(self.env)
        if extra:
            env.update(extra)
        return env

    # ------------------------------------------------------------------ pactl
    def _pactl_raw(
        self,
        *args: str,
        timeout: float = _PACTL_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pactl`` against this server, never raising on failure."""
        try:
            return subprocess.run(
                ["pactl", *args],
                env=self.child_env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "pactl timed out")

    def _pactl(self, *args: str) -> str:
        """Run ``pactl``; raise :class:`PulseError` with the log on failure."""
        res = self._pactl_raw(*args)
        if res.returncode != 0:
            self._fail(f"pactl {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def pactl(self, *args: str) -> str:
        """Run an arbitrary ``pactl`` command (for tests/debugging)."""
        return self._pactl(*args)

    def _find_module(self, name: str) -> int | None:
        for line in self._pactl("list", "short", "modules").splitlines():
            cols = line.split("\t")
            if len(cols) >= 2 and cols[1] == name:
                return int(cols[0])
        return None

    def sources(self) -> list[str]:
        """Names of the sources currently known to the server."""
        out = self._pactl("list", "short", "sources")
        return [line.split("\t")[1] for line in out.splitlines() if "\t" in line]

    def source_index(self, name: str = MIC_SOURCE) -> int | None:
        """Current index of source ``name`` (changes on every replug)."""
        for line in self._pactl("list", "short", "sources").splitlines():
            cols = line.split("\t")
            if len(cols) >= 2 and cols[1] == name:
                return int(cols[0])
        return None

    def source_outputs(self) -> list[tuple[int, int]]:
        """``(source_output_index, source_index)`` of all recording streams."""
        out = self._pactl("list", "short", "source-outputs")
        rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
        return [(int(r[0]), int(r[1])) for r in rows]

    # ---------------------------------------------------------- unplug/replug
    @property
    def mic_plugged(self) -> bool:
        """Whether the virtual mic module is currently loaded."""
        return self._mic_module is not None

    def unplug_mic(self, *, fallback_source: bool = False) -> None:
        """Make the virtual microphone disappear (unload its module).

        Measured effect on an open sounddevice ``InputStream``:

        * ``fallback_source=False`` (default): the null sink is unloaded too,
          so no source is left.  PulseAudio kills the stream, PortAudio's
          callback thread fails within a few ms (it prints
          ``Expression 'alsa_snd_pcm_poll_descriptors_revents(...)' failed``
          to stderr), ``finished_callback`` runs, ``stream.active`` becomes
          ``False`` (``stream.stopped`` stays ``False``), and the callback
          never sees a status flag.  This is what a vanished USB mic looks
          like to the daemon and is the case reconnect logic must handle.
        * ``fallback_source=True``: only the mic is unloaded; PulseAudio
          silently moves the stream to ``nullsink.monitor``.  Callbacks
          continue (after a gap of ~0.1-2.5 s) delivering pure zeros, with
          no status flag and no error -- undetectable except by content.
          On :meth:`replug_mic` PulseAudio moves the stream back to the mic
          by itself (it follows the default source).
        """
        with self._lock:
            if self._mic_module is not None:
                self._pactl("unload-module", str(self._mic_module))
                self._mic_module = None
            if not fallback_source and self._sink_module is not None:
                self._pactl("unload-module", str(self._sink_module))
                self._sink_module = None

    def replug_mic(self) -> None:
        """Reload whatever :meth:`unplug_mic` removed; mic becomes default."""
        with self._lock:
            if self._sink_module is None:
                self._sink_module = int(
                    self._pactl("load-module", "module-null-sink", f"sink_name={NULL_SINK}"),
                )
            if self._mic_module is None:
                self._mic_module = int(
                    self._pactl("load-module", *_mic_module_args(self.fifo)),
                )
            self._pactl("set-default-source", MIC_SOURCE)

    # ------------------------------------------------------- a second source
    def add_tone_source(self, name: str = TONE_SOURCE, frequency: int = TONE_HZ) -> int:
        """Load a second *real* source that hears a steady sine tone; its module index.

        ``module-sine-source`` has its own clock (no feeder needed) and is not a
        monitor, so it is what a second microphone looks like -- a headset next to
        the webcam.  It does not become the default source.  Remove it with
        :meth:`unload_module`; streams on it are then moved to the default source.
        """
        return int(
            self._pactl(
                "load-module",
                "module-sine-source",
                f"source_name={name}",
                f"rate={SAMPLE_RATE}",
                f"frequency={frequency}",
                f"source_properties=\"device.description='{TONE_DESCRIPTION}'\"",
            ),
        )

    def unload_module(self, module: int) -> None:
        """Unload a module loaded with ``pactl`` (e.g. :meth:`add_tone_source`)."""
        self._pactl("unload-module", str(module))

    def move_source_output(self, output: int, source: str) -> None:
        """Move a recording stream to ``source``, as the desktop's sound settings do."""
        self._pactl("move-source-output", str(output), source)

    # -------------------------------------------------------------- teardown
    def stop(self, timeout: float = 3.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL) and remove ``workdir``.

        Idempotent.  Only ever signals our own child PID.
        """
        proc = self.process
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ----------------------------------------------------------------- misc
    def device_listing(self) -> str:
        """Output of ``python -m sounddevice`` as the daemon would see it.

        Runs in a subprocess with :attr:`env` so PortAudio initialises *after*
        ``PULSE_SERVER`` is set.  Expected: ``pulse`` and ``default`` (ALSA, the
        latter marked ``*``); without the env there are no devices at all.
        """
        res = subprocess.run(
            [sys.executable, "-m", "sounddevice"],
            env=self.child_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return res.stdout + res.stderr


def _mic_module_args(fifo: Path) -> list[str]:
    """``module-pipe-source`` + arguments for the virtual mic.

    The description is what PulseAudio (and the daemon, which asks it) call the
    source, like "Built-in Audio Analog Stereo" on a desktop.  Quoted for
    PulseAudio's own argument parser: one list item per argument.
    """
    return [
        "module-pipe-source",
        f"file={fifo}",
        "format=s16le",
        f"rate={SAMPLE_RATE}",
        f"channels={CHANNELS}",
        f"source_name={MIC_SOURCE}",
        f"source_properties=\"device.description='{MIC_DESCRIPTION}'\"",
    ]


def _launch(workdir: Path, log_path: Path, *, append: bool = False) -> subprocess.Popen[bytes]:
    """Start ``pulseaudio`` on ``workdir``'s socket, logging to ``log_path``."""
    exe = shutil.which("pulseaudio")
    if exe is None:
        msg = "pulseaudio not installed (apt: pulseaudio pulseaudio-utils)"
        raise PulseError(msg)
    cmd = [
        exe,
        "--daemonize=no",
        "--system=false",
        "--use-pid-file=no",
        "-n",  # no default.pa: only the modules below
        "--exit-idle-time=-1",
        "--disallow-exit=yes",
        "--disallow-module-loading=no",  # unplug/replug need load-module
        "--realtime=no",
        "--high-priority=no",
        "--fail=yes",  # a failing -L module aborts startup
        "--no-cpu-limit=yes",  # a loaded CI box must not get it SIGXCPU-killed
        "--log-target=stderr",
        "--log-level=debug",
        "--log-time=yes",
        "-L",
        f"module-native-protocol-unix socket={workdir / 'pulse.sock'} auth-anonymous=1",
        "-L",
        f"module-null-sink sink_name={NULL_SINK}",
        "-L",
        " ".join(_mic_module_args(workdir / "mic.fifo")),
    ]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PULSE_", "DBUS_", "XDG_")) and k != "DISPLAY"
    }
    env.update(
        HOME=str(workdir / "home"),
        XDG_RUNTIME_DIR=str(workdir / "runtime"),
        XDG_CONFIG_HOME=str(workdir / "config"),
        PULSE_RUNTIME_PATH=str(workdir / "runtime" / "pulse"),
        PULSE_STATE_PATH=str(workdir / "state"),
        PULSE_CLIENTCONFIG=str(workdir / "client.conf"),
    )
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            preexec_fn=_set_pdeathsig,  # noqa: PLW1509 - only calls prctl
        )


class VirtualMic:
    """Feeds audio into the virtual microphone's FIFO in real time.

    A background thread writes 20 ms chunks paced on a monotonic clock:
    queued samples first, silence whenever the queue is empty (the pipe source
    would otherwise stall the capture stream).  While the mic is unplugged the
    clock keeps running and the audio is dropped, like a real microphone.
    """

    def __init__(
        self,
        fifo: Path,
        server: PulseServer | None = None,
        chunk_frames: int = CHUNK_FRAMES,
    ) -> None:
        """Create the feeder; call :meth:`start` to begin writing."""
        self.fifo = fifo
        self.server = server
        self.chunk_frames = chunk_frames
        self._queue: deque[npt.NDArray[np.int16]] = deque()
        self._cond = threading.Condition()
        self._pending = 0  # frames queued but not yet written (or dropped)
        self._stop = threading.Event()
        # Serialises FIFO access between the pacing thread and burst feeds so
        # that silence chunks can never interleave with a burst.
        self._io_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self.frames_written = 0
        self.frames_dropped = 0
        self.error: BaseException | None = None

    # ------------------------------------------------------------- public API
    def start(self) -> None:
        """Start the feeder thread (writes silence until fed) on an empty FIFO."""
        if self._thread is not None:
            return
        drain_fifo(self.fifo)
        self._thread = threading.Thread(target=self._run, name="virtual-mic", daemon=True)
        self._thread.start()

    def feed(self, samples: npt.ArrayLike, *, realtime: bool = True) -> None:
        """Queue mono int16 samples for the microphone.

        Args:
            samples: 1-D int16 audio at 16 kHz (other integer dtypes are
                range-checked and converted; floats are rejected because
                silently scaling them would hide test bugs).
            realtime: ``True`` (default) plays at real speed, like a mic.
                ``False`` writes immediately in one burst (up to the 64 KiB
                pipe buffer = 2 s); the pipe source forwards it at once, so a
                recorder receives it faster than real time -- only useful to
                pre-fill, and it may overflow a small capture buffer.

        """
        arr = np.asarray(samples)
        if arr.ndim != 1:
            msg = f"expected mono 1-D samples, got shape {arr.shape}"
            raise ValueError(msg)
        if not np.issubdtype(arr.dtype, np.integer):
            msg = f"expected int16 samples, got {arr.dtype}"
            raise TypeError(msg)
        if arr.dtype != np.int16:
            info = np.iinfo(np.int16)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                msg = "samples out of int16 range"
                raise ValueError(msg)
            arr = arr.astype(np.int16)
        if not realtime:
            with self._io_lock:
                self._write_burst(np.ascontiguousarray(arr))
            return
        with self._cond:
            self._queue.append(np.ascontiguousarray(arr))
            self._pending += arr.size

    def wait_done(self, timeout: float) -> None:
        """Block until everything queued by :meth:`feed` has been written.

        "Written" means handed to the FIFO; a connected recorder receives the
        last chunk a few ms later (allow ~0.1-0.2 s before stopping it).
        Audio fed while no stream records from the mic waits in the FIFO and
        only part of it reaches the next stream, so start the recorder (daemon)
        first and feed afterwards.

        Raises:
            TimeoutError: If the queue did not drain in ``timeout`` seconds.
            RuntimeError: If the feeder thread crashed.

        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                self._raise_if_failed()
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"virtual mic still has {self._pending} frames queued"
                    raise TimeoutError(msg)
                self._cond.wait(min(left, 0.1))
        self._raise_if_failed()

    def unplug(self, *, fallback_source: bool = False) -> None:
        """Remove the mic from the server; see :meth:`PulseServer.unplug_mic`."""
        if self.server is None:
            msg = "VirtualMic was created without a server"
            raise RuntimeError(msg)
        self.server.unplug_mic(fallback_source=fallback_source)

    def replug(self) -> None:
        """Bring the mic back; the feeder re-opens the new FIFO by itself."""
        if self.server is None:
            msg = "VirtualMic was created without a server"
            raise RuntimeError(msg)
        self.server.replug_mic()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the feeder thread, close and empty the FIFO.  Never blocks long."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()
        drain_fifo(self.fifo)

    def pending_bytes(self) -> int:
        """Bytes in the FIFO that PulseAudio has not read yet; 0 when unplugged."""
        try:
            fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            level = array.array("i", [0])
            fcntl.ioctl(fd, termios.FIONREAD, level)
            return level[0]
        finally:
            os.close(fd)

    # -------------------------------------------------------------- internals
    def _raise_if_failed(self) -> None:
        if self.error is not None:
            msg = f"virtual mic feeder crashed: {self.error!r}"
            raise RuntimeError(msg) from self.error

    def _open(self) -> bool:
        """Try to open the FIFO for writing without blocking."""
        if self._fd is not None:
            return True
        try:
            self._fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            # ENOENT: mic unplugged (module removed the FIFO);
            # ENXIO: FIFO exists but no reader yet (module loading/unloading).
            if exc.errno in (errno.ENOENT, errno.ENXIO):
                return False
            raise
        return True

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes) -> bool:
        """Write one atomic chunk; ``False`` means it was dropped."""
        if not self._open():
            return False
        assert self._fd is not None
        deadline = time.monotonic() + 0.5
        while not self._stop.is_set():
            try:
                os.write(self._fd, data)
            except BlockingIOError:  # pipe full: reader is slow, retry shortly
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.002)
                continue
            except BrokenPipeError:  # module unloaded mid-write: re-open later
                self._close()
                return False
            return True
        return False

    def _write_burst(self, arr: npt.NDArray[np.int16]) -> None:
        step = self.chunk_frames
        for i in range(0, arr.size, step):
            piece = arr[i : i + step]
            if self._write(piece.tobytes()):
                self.frames_written += piece.size
            else:
                self.frames_dropped += piece.size

    def _next_chunk(self) -> tuple[npt.NDArray[np.int16], int]:
        """Take up to one chunk of queued audio, padded with silence.

        Returns the chunk and how many queued frames it consumed.
        """
        out = np.zeros(self.chunk_frames, dtype=np.int16)
        filled = 0
        with self._cond:
            while filled < self.chunk_frames and self._queue:
                head = self._queue[0]
                take = min(head.size, self.chunk_frames - filled)
                out[filled : filled + take] = head[:take]
                filled += take
                if take == head.size:
                    self._queue.popleft()
                else:
                    self._queue[0] = head[take:]
        return out, filled

    def _run(self) -> None:
        period = self.chunk_frames / SAMPLE_RATE
        t0 = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set():
                chunk, consumed = self._next_chunk()
                with self._io_lock:
                    ok = self._write(chunk.tobytes())
                if ok:
                    self.frames_written += chunk.size
                else:
                    self.frames_dropped += chunk.size
                if consumed:
                    with self._cond:
                        self._pending -= consumed
                        self._cond.notify_all()
                n += 1
                delay = t0 + n * period - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -1.0:  # badly late (suspended?): resync, don't burst
                    t0, n = time.monotonic(), 0
        except BaseException as exc:  # surfaced by wait_done()
            self.error = exc
            with self._cond:
                self._cond.notify_all()


def drain_fifo(fifo: Path) -> int:
    """Read and drop what the virtual mic's FIFO holds; return how many bytes.

    Called with no feeder writing, between tests: PulseAudio reads the FIFO only
    while a stream records, so the bytes here were fed while nobody listened.
    """
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:  # unplugged: the module removed the FIFO
        return 0
    drained = 0
    try:
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:  # empty (PulseAudio keeps a writer open)
                break
            if not data:
                break
            drained += len(data)
    finally:
        os.close(fd)
    return drained


@contextlib.contextmanager
def reinit_portaudio(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` and re-initialise PortAudio in-process.

    PortAudio enumerates host devices only in ``Pa_Initialize()``, which
    ``sounddevice`` runs at import time -- so a process that imported
    ``sounddevice`` before ``PULSE_SERVER`` was set sees no ``pulse`` device
    (on this machine: no devices at all).  ``sd._terminate(); sd._initialize()``
    (private but stable sounddevice API) re-runs the enumeration; ALSA's
    config, including the ``default`` -> pulse hook, is re-read as well.
    On exit the previous environment is restored and PortAudio is
    re-initialised again.  All streams must be closed before entering/leaving.
    """
    import sounddevice as sd

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sd._terminate()
    sd._initialize()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sd._terminate()
        sd._initialize()
