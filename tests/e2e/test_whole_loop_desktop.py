"""Wake word to picture on a simulated desktop: PulseAudio microphone, D-Bus session
bus with a recording notification server, the tiny image model, a real gallery."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.daemon import DaemonProcess
from tests.e2e.dbus_session import NotificationServer, wait_until
from tests.e2e.pulse import PulseServer, VirtualMic
from tests.support import concat, data_audio, run_cli, silence, write_wav

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ConfigFile = Callable[[str], Path]


def desktop_config(config_file: ConfigFile, gallery: Path) -> Path:
    return config_file(
        f'[audio]\ndevice = "pulse"\n[gallery]\ndir = "{gallery}"\n[notify]\nenabled = true\n'
    )


def requests() -> np.ndarray:
    return concat(
        silence(1.0),
        data_audio("espeak/hey_jarvis_benign_en+f3.wav"),
        silence(2.5),
        data_audio("espeak/hey_jarvis_toxic_en-us.wav"),
        silence(2.5),
    )


def test_file_run_notifies_image_and_rejection(
    tmp_path: Path,
    config_file: ConfigFile,
    session_bus: str,
    notification_server: NotificationServer,
) -> None:
    gallery = tmp_path / "gallery"
    wav = write_wav(tmp_path / "in.wav", requests())
    result = run_cli(
        ["run", "--config", str(desktop_config(config_file, gallery)), "--input", str(wav)],
        env={"DBUS_SESSION_BUS_ADDRESS": session_bus},
    )
    assert result.returncode == 0, result.stderr
    (image,) = result.of("image")
    calls = notification_server.wait_for_calls(2, timeout=20)
    # One notification per request, updated in place: its last state is what is on screen.
    on_screen = list({call.id: call for call in calls}.values())
    assert len(on_screen) == 2
    assert [call.replaces_id for call in calls].count(0) == 2
    assert calls[0].body == "Listening…"
    drawn = next(c for c in on_screen if c.body == image["prompt"])
    assert drawn.summary == "speech2image"
    assert drawn.hints["image-path"] == Path(image["path"]).as_uri()
    assert "default" in drawn.actions
    refused = next(c for c in on_screen if c is not drawn)
    assert "rejected" in refused.summary
    assert "threat" in refused.body


def test_microphone_request_to_picture_and_notification(
    tmp_path: Path,
    config_file: ConfigFile,
    pulse_server: PulseServer,
    virtual_mic: VirtualMic,
    session_bus: str,
    notification_server: NotificationServer,
) -> None:
    gallery = tmp_path / "gallery"
    env = pulse_server.child_env({"DBUS_SESSION_BUS_ADDRESS": session_bus})
    daemon = DaemonProcess(["--config", str(desktop_config(config_file, gallery))], env)
    try:
        daemon.wait_for("listening", timeout=60)
        virtual_mic.feed(requests())
        image = daemon.wait_for("image", timeout=60)
        rejected = daemon.wait_for("rejected", timeout=60)
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.stderr
    assert rejected["reason"] == "toxic"
    with Image.open(image["path"]) as picture:
        assert picture.text["parameters"].splitlines()[0] == daemon.of("transcript")[0]["text"]
    assert [p for p in gallery.rglob("*.png") if ".tmp" not in p.parts] == [Path(image["path"])]
    wait_until(lambda: len(notification_server.calls) >= 2, timeout=20, what="notifications")
    assert daemon.events[-1]["type"] == "stopped"
    assert daemon.events[-1]["dropped_frames"] == 0


def test_no_session_bus_warns_once_and_keeps_working(
    tmp_path: Path, config_file: ConfigFile
) -> None:
    gallery = tmp_path / "gallery"
    wav = write_wav(tmp_path / "in.wav", requests())
    result = run_cli(
        ["run", "--config", str(desktop_config(config_file, gallery)), "--input", str(wav)],
        env={"DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"},
    )
    assert result.returncode == 0, result.stderr
    assert len(result.of("image")) == 1
    warnings = [
        line for line in result.stderr.splitlines() if "WARNING speech2image.desktop.notify" in line
    ]
    assert len(warnings) == 1, result.stderr
