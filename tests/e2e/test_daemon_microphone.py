"""The whole daemon listening to a real PulseAudio server through sounddevice.

The virtual microphone plays the same audio as the file-input integration tests;
the daemon must emit the same events as it does for the file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.daemon import DaemonProcess
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.support import concat, data_audio, run_cli, silence, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONFIG = """
[audio]
device = "pulse"
[wake]
models = ["hey_mycroft", "alexa"]
[listen]
silence_timeout = 1.5
"""


def spoken_request() -> np.ndarray:
    return concat(
        silence(1.0), data_audio("hey_mycroft_test.wav"), data_audio("jfk.flac"), silence(2.5)
    )


@pytest.mark.parametrize("rate", [0, 48000])
def test_microphone_gives_the_same_events_as_the_file(
    tmp_path: Path,
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    rate: int,
) -> None:
    """rate 0 opens at 16 kHz; 48000 makes the daemon resample, as with most USB mics."""
    config = config_file(CONFIG.replace("[audio]", f"[audio]\nsamplerate = {rate}"))
    audio = spoken_request()
    from_file = run_cli(
        ["run", "--config", str(config), "--input", str(write_wav(tmp_path / "in.wav", audio))]
    )

    daemon = DaemonProcess(["--config", str(config)], pulse_server.child_env())
    try:
        listening = daemon.wait_for("listening", timeout=30)
        assert listening["source"].startswith("mic:")
        virtual_mic.feed(audio)
        wake = daemon.wait_for("wake", timeout=30)
        utterance = daemon.wait_for("utterance", timeout=30)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.stderr

    file_wake, file_utterance = from_file.of("wake")[0], from_file.of("utterance")[0]
    assert wake["model"] == file_wake["model"] == "hey_mycroft"
    assert utterance["id"] == wake["id"]
    assert utterance["reason"] == file_utterance["reason"] == "silence"
    assert utterance["duration_s"] == pytest.approx(file_utterance["duration_s"], abs=0.25)
    assert len(daemon.of("wake")) == 1
    assert daemon.events[-1]["type"] == "stopped"
    assert daemon.events[-1]["dropped_frames"] == 0
    assert daemon.events[-1]["overflows"] == 0


def test_microphone_that_disappears_is_reopened(
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    config = config_file(CONFIG)
    daemon = DaemonProcess(["--config", str(config)], pulse_server.child_env())
    try:
        first = daemon.wait_for("listening", timeout=30)
        virtual_mic.feed(silence(1.0))
        virtual_mic.wait_done(timeout=10)
        virtual_mic.unplug()
        lost = daemon.wait_for("error", timeout=30, stage="audio")
        assert "microphone" in lost["message"]
        virtual_mic.replug()
        # Listening resumes (a second `listening` event, naming the device it now listens
        # on) and a request spoken then is heard.
        resumed = daemon.wait_for("listening", timeout=60)
        assert re.fullmatch(r"mic:#\d+ pulse \(Virtual Microphone\)", first["source"]), first
        assert re.fullmatch(r"mic:#\d+ pulse \(Virtual Microphone\)", resumed["source"]), resumed
        virtual_mic.feed(spoken_request())
        daemon.wait_for("wake", timeout=30, model="hey_mycroft")
        daemon.wait_for("utterance", timeout=30)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.stderr


def test_devices_lists_the_inputs(pulse_server: PulseServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", "devices"],
        env=pulse_server.child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert any(" pulse " in f"{line} " and "Hz)" in line for line in lines)
    assert any(line.startswith("*") for line in lines)


class AlsaMicrophone:
    """The virtual mic as ALSA (so PortAudio) sees it: a device that comes and goes.

    PortAudio lists PulseAudio's sources only through ALSA devices, and ALSA's
    ``pulse`` and ``default`` stay listed when a source is unloaded. A PCM named
    ``virtmic`` in a config file given by ALSA_CONFIG_PATH appears in the list only
    while the file defines it, as a USB microphone's card does when it is plugged in.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / "virtmic.conf"
        self.path.write_text("", encoding="utf-8")  # not plugged in

    @property
    def env(self) -> dict[str, str]:
        return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{self.path}"}

    def plug_in(self) -> None:
        """Written whole, then renamed: the daemon re-lists devices at any moment."""
        fresh = self.path.with_suffix(".new")
        fresh.write_text("pcm.virtmic {\n  type pulse\n  device virtmic\n}\n", encoding="utf-8")
        os.replace(fresh, self.path)


def test_missing_microphone_is_waited_for_until_it_is_plugged_in(
    tmp_path: Path,
    config_file: Callable[[str], Path],
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
) -> None:
    """Not there at start: an error listing the inputs, no exit; plugged in: it listens."""
    alsa = AlsaMicrophone(tmp_path)
    config = config_file(
        CONFIG.replace('device = "pulse"', 'device = "virtmic"\nreconnect_max_delay = 1.0')
    )
    virtual_mic.unplug()
    daemon = DaemonProcess(["--config", str(config)], pulse_server.child_env(alsa.env))
    try:
        waiting = daemon.wait_for("listening", timeout=60)
        assert waiting["source"] == "mic:'virtmic' (waiting)"
        missing = daemon.wait_for("error", timeout=30, stage="audio")
        assert missing["id"] is None
        assert "[audio] device = 'virtmic' matches no input device" in missing["message"]
        inputs = missing["message"].split("inputs: ")[1]
        assert "pulse" in inputs
        assert "default" in inputs
        time.sleep(3)  # several retries (every 0.5 to 1 s): it waits, it does not exit
        assert daemon.process.poll() is None, daemon.stderr

        virtual_mic.replug()
        alsa.plug_in()
        listening = daemon.wait_for("listening", timeout=30)
        assert re.fullmatch(r"mic:#\d+ virtmic \(Virtual Microphone\)", listening["source"]), (
            listening
        )
        virtual_mic.feed(concat(silence(0.5), data_audio("hey_mycroft_test.wav"), silence(1.0)))
        wake = daemon.wait_for("wake", timeout=30, model="hey_mycroft")
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.stderr
    assert wake["score"] >= 0.5
    reports = [e for e in daemon.of("error") if "matches no input device" in e["message"]]
    assert len(reports) == 1, "a missing microphone is reported once, not at every retry"
    assert daemon.events[-1]["type"] == "stopped"
