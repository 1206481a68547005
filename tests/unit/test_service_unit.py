"""The user unit's text and the decisions of `speech2image service`, without systemd.

How systemd itself reads the text (quoting, specifiers, the sandbox) is tested against
the real `systemd-analyze` and a real user manager in tests/e2e/test_systemd_unit.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from speech2image.config import EX_CONFIG, Config, DebugConfig, GalleryConfig
from speech2image.service.commands import (
    EX_UNAVAILABLE,
    ToolMissingError,
    installation_spec,
    journal_command,
    needs_network,
    program_command,
    register,
    run_tool,
    under_tmp,
    unit_dir,
    write_action,
    write_unit,
)
from speech2image.service.lock import EX_ALREADY_RUNNING
from speech2image.service.unit import (
    TEMPLATE,
    UnitSpec,
    exec_start,
    quote,
    render_unit,
    systemd_path,
    template_spec,
)

SHIPPED = Path(__file__).parents[2] / "systemd" / "speech2image.service"
HOME = Path("/home/ada")


def settings(text: str) -> dict[str, list[str]]:
    """Each directive's values in order (comments and section headers left out)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def spec(**changes: Any) -> UnitSpec:
    return dataclasses.replace(template_spec(HOME), **changes)


def test_the_shipped_template_is_the_rendered_template() -> None:
    """Regenerate with: python -c 'from speech2image.service.unit import *;
    print(render_unit(TEMPLATE), end="")' > systemd/speech2image.service"""
    assert SHIPPED.read_text(encoding="utf-8") == render_unit(TEMPLATE)


def test_the_template_is_a_default_user_install() -> None:
    values = settings(render_unit(TEMPLATE))
    assert values["ExecStart"] == ["%h/.local/bin/speech2image run"]
    assert values["ReadWritePaths"] == [
        "-%h/outputs",
        "-%h/.cache/speech2image",
        "-%h/.cache/huggingface",
        "-%h/.local/state/speech2image",
        "%t",
    ]


def test_the_service_contract() -> None:
    values = settings(render_unit(spec()))
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "RestartSec": ["5"],
        "RestartPreventExitStatus": [f"{EX_CONFIG} {EX_ALREADY_RUNNING}"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "TimeoutStopSec": ["15"],
        "TimeoutStartSec": ["600"],
        "After": ["graphical-session.target"],
        "PartOf": ["graphical-session.target"],
        "WantedBy": ["graphical-session.target"],
        "SyslogIdentifier": ["speech2image"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["read-only"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "CapabilityBoundingSet": [""],
        "SystemCallFilter": ["@system-service"],
    }
    assert {key: values.get(key) for key in expected} == expected
    assert "PYTHONUNBUFFERED=1" in values["Environment"]
    # Each would break CUDA, the GPU or the audio devices: named only in comments.
    for absent in ("MemoryDenyWriteExecute", "PrivateDevices", "ProcSubset", "DevicePolicy"):
        assert absent not in values


def test_the_network_is_closed_unless_the_web_page_or_wyoming_needs_it() -> None:
    closed = settings(render_unit(spec()))
    assert closed["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK"]
    assert closed["PrivateNetwork"] == ["yes"]
    opened = settings(render_unit(spec(network=True)))
    assert opened["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK AF_INET AF_INET6"]
    assert "PrivateNetwork" not in opened


def test_paths_with_spaces_are_quoted_and_specifiers_escaped() -> None:
    home = Path("/home/ada lovelace")
    gallery = home / "My Pictures"
    elsewhere = Path("/srv/100% art")
    unit = render_unit(
        dataclasses.replace(
            template_spec(home),
            program=("/opt/speech 2 image/bin/python", "-m", "speech2image.cli"),
            config=home / ".config" / "my $HOME.toml",
            writable=(gallery, elsewhere),
        )
    )
    values = settings(unit)
    program = '"/opt/speech 2 image/bin/python" -m speech2image.cli'
    assert values["ExecStart"] == [f'{program} run --config "%h/.config/my $$HOME.toml"']
    assert values["ReadWritePaths"] == ['"-%h/My Pictures"', '"-/srv/100%% art"', "%t"]
    assert values["ExecStartPre"] == ['+/bin/mkdir -p "%h/My Pictures" "/srv/100%% art"']


def test_quoting() -> None:
    assert quote("plain/path") == "plain/path"
    assert quote("") == '""'
    assert quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert quote("a;b") == '"a;b"'
    assert quote("$PATH") == "$PATH"  # only Exec lines expand variables
    assert quote("$PATH", dollar=True) == "$$PATH"
    with pytest.raises(ValueError, match="line break"):
        quote("two\nlines")


def test_paths_under_home_use_the_home_specifier() -> None:
    assert systemd_path("/home/ada/outputs", HOME) == "%h/outputs"
    assert systemd_path("/home/ada", HOME) == "/home/ada"
    assert systemd_path("/home/adam/x", HOME) == "/home/adam/x"  # not a prefix match
    assert systemd_path("relative%", HOME) == "relative%%"


def test_exec_start_runs_the_daemon_with_the_config_found() -> None:
    assert exec_start(spec(config=None)) == (str(HOME / ".local/bin/speech2image"), "run")
    with_config = exec_start(spec(config=Path("/etc/s2i.toml")))
    assert with_config[-3:] == ("run", "--config", "/etc/s2i.toml")


def test_exec_start_points_at_this_installation() -> None:
    """The console script beside this interpreter (the venv's, not resolved to the
    system python), else this interpreter with -m."""
    script = Path(sys.executable).parent / "speech2image"
    assert script.is_file()  # the test venv installs the package
    assert program_command() == (str(script),)
    lone = "/nonexistent/bin/python3"
    assert program_command(lone) == (lone, "-m", "speech2image.cli")


def test_installation_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "c.toml"
    config_file.touch()
    hf = tmp_path / "big disk" / "hf"
    config = Config(gallery=GalleryConfig(dir="pictures"))
    made = installation_spec(config, config_file, tmp_path, environ={"HF_HOME": str(hf)})
    assert made.writable == (
        tmp_path / "pictures",  # relative: under home, the unit's WorkingDirectory
        tmp_path / ".cache" / "speech2image",
        hf,
        tmp_path / ".local" / "state" / "speech2image",
    )
    assert made.config == config_file
    assert made.environment == (("HF_HOME", str(hf)),)
    assert not made.network
    hub = {"HF_HUB_CACHE": "/srv/hub"}  # outside HF_HOME: writable too
    assert Path("/srv/hub") in installation_spec(config, None, tmp_path, environ=hub).writable
    saving = Config(debug=DebugConfig(save_audio=True, audio_dir="/srv/clips"))
    assert installation_spec(saving, None, tmp_path, environ={}).writable[-1] == Path("/srv/clips")
    # a page served beyond loopback keeps its token and certificate in the config folder
    config_dir = tmp_path / ".config" / "speech2image"
    local = Config(gallery=GalleryConfig(serve=True, host="127.0.0.1"))
    assert config_dir not in installation_spec(local, None, tmp_path, environ={}).writable
    lan = Config(gallery=GalleryConfig(serve=True, host="0.0.0.0"))
    made = installation_spec(lan, None, tmp_path, environ={})
    assert config_dir in made.writable
    assert made.network


def test_network_is_read_from_tables_that_may_exist_later() -> None:
    assert not needs_network(Config())
    assert needs_network(Config(gallery=GalleryConfig(serve=True)))
    wyoming: Any = SimpleNamespace(gallery=GalleryConfig(), wyoming=SimpleNamespace(enabled=True))
    assert needs_network(wyoming)


def test_write_action_and_backup(tmp_path: Path) -> None:
    assert write_action(None, "a") == "created"
    assert write_action("a", "a") == "unchanged"
    assert write_action("a", "b") == "replaced"
    unit = tmp_path / "user" / "speech2image.service"
    assert write_unit(unit, "one\n") == "created"
    assert write_unit(unit, "one\n") == "unchanged"
    assert write_unit(unit, "two\n") == "replaced"
    assert unit.read_text(encoding="utf-8") == "two\n"
    assert (tmp_path / "user" / "speech2image.service.bak").read_text(encoding="utf-8") == "one\n"
    assert sorted(p.name for p in unit.parent.iterdir()) == [unit.name, unit.name + ".bak"]


def test_unit_dir_follows_xdg_config_home() -> None:
    assert unit_dir({"XDG_CONFIG_HOME": "/c", "HOME": "/h"}) == Path("/c/systemd/user")
    assert unit_dir({"HOME": "/h"}) == Path("/h/.config/systemd/user")


def test_the_commands_parse() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    install = parser.parse_args(["service", "install", "--now", "--config", "c.toml"])
    assert (install.now, install.enable, install.config) == (True, False, "c.toml")
    logs = parser.parse_args(["service", "logs", "-f", "-n", "20"])
    expected = "journalctl --user -u speech2image --follow --lines 20"
    assert journal_command(logs.follow, logs.lines) == expected.split()
    assert journal_command(False, None) == expected.split()[:4]
    assert callable(parser.parse_args(["service", "status"]).command)


def test_a_missing_tool_is_a_sentence_and_a_hang_a_timeout() -> None:
    with pytest.raises(ToolMissingError, match="not found"):
        run_tool(["speech2image-no-such-tool"])
    hung = run_tool(["sleep", "5"], timeout=0.2)  # the deadline the code enforces
    assert hung.returncode == 124
    assert "did not answer" in hung.stderr


@pytest.mark.parametrize("action", ["status", "logs"])
def test_without_systemd_the_commands_say_so(action: str, tmp_path: Path) -> None:
    """No systemctl or journalctl on PATH: a sentence and EX_UNAVAILABLE, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "speech2image.cli", "service", action],
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EX_UNAVAILABLE, done.stderr
    assert "not found: this system does not seem to run systemd" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_installation_under_tmp_is_not_hidden_by_a_private_tmp(tmp_path: Path) -> None:
    """A venv in /tmp (a CI checkout, say) would fail to start with 203/EXEC."""
    assert under_tmp(Path("/tmp/x/.venv/bin/python"))
    assert under_tmp(Path("/var/tmp/y"))
    assert not under_tmp(Path("/home/u/.venv/bin/python"))
    config = Config(gallery=GalleryConfig(dir="/srv/g"))
    python = str(tmp_path / ".venv" / "bin" / "python")
    spec = installation_spec(config, None, Path("/home/u"), environ={}, executable=python)
    assert not spec.private_tmp
    assert "PrivateTmp=" not in render_unit(spec).replace("# No PrivateTmp=", "")
    assert "PrivateTmp=yes" in render_unit(dataclasses.replace(spec, private_tmp=True))
