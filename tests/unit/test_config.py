"""Config: every kind of mistake is an error naming the file and key, exit status 78."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from speech2image.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    find_config_file,
    load_config,
    parse_config,
    to_toml_dict,
)

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = REPO / "config" / "speech2image.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    message = str(caught.value)
    assert str(path) in message
    return message


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEECH2IMAGE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = load_config(None)
    assert config == Config()
    assert config.wake.models == ("hey_jarvis",)
    assert config.wake.threshold == 0.5
    assert config.wake.refractory == 2.0
    assert config.listen.silence_timeout == 0.7
    assert config.listen.max_utterance == 15.0
    assert config.listen.no_speech_timeout == 4.0


def test_documented_file_is_exactly_the_defaults() -> None:
    assert load_config(str(DOCUMENTED)) == Config()


def test_documented_file_mentions_every_key() -> None:
    text = DOCUMENTED.read_text(encoding="utf-8")
    for table, values in to_toml_dict(Config()).items():
        assert f"[{table}]" in text
        for key, value in values.items():
            if isinstance(value, dict):
                assert f"[{table}.{key}" in text, f"[{table}.{key}] undocumented"
                continue
            assert f"\n{key} = " in text or f"# {key} = " in text, f"[{table}] {key} undocumented"


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    user = tmp_path / "xdg" / "speech2image" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("[wake]\nthreshold = 0.6\n")
    env_file = write(tmp_path, "[wake]\nthreshold = 0.7\n")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("[wake]\nthreshold = 0.8\n")

    monkeypatch.delenv("SPEECH2IMAGE_CONFIG", raising=False)
    assert find_config_file(None) == user
    monkeypatch.setenv("SPEECH2IMAGE_CONFIG", str(env_file))
    assert load_config(None).wake.threshold == 0.7
    assert load_config(str(explicit)).wake.threshold == 0.8


def test_named_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"--config: config file .*nope.toml does not exist"):
        load_config(str(tmp_path / "nope.toml"))
    monkeypatch.setenv("SPEECH2IMAGE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"SPEECH2IMAGE_CONFIG: .*gone.toml does not exist"):
        load_config(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[wak]\n", r"unknown table \[wak\]; allowed tables: \[audio\], \[wake\], \[listen\], "),
        (
            '[speech]\ndevice = "gpu"\n',
            r"\[speech\] device: 'gpu' is not allowed; choose from auto,",
        ),
        ('[moderation]\nbackends = ["flai"]\n', r"'flai' is not allowed; choose from profanity, "),
        ("[moderation.thresholds]\ntoxic = 0.5\n", r"thresholds.toxic: 'toxic' is not allowed"),
        ("[moderation.thresholds]\nthreat = 1.5\n", r"thresholds.threat = 1.5 is out of range"),
        ("[wake]\ntreshold = 0.6\n", r"unknown key \[wake\] treshold; allowed keys: models, thr"),
        ('[wake]\nthreshold = "high"\n', r"\[wake\] threshold = 'high' has the wrong type; exp"),
        ("[wake]\nthreshold = true\n", r"\[wake\] threshold = True has the wrong type"),
        ('[wake]\nmodels = "hey_jarvis"\n', r"\[wake\] models .* expected a list of strings"),
        ("[wake]\npatience = 1.5\n", r"\[wake\] patience = 1.5 has the wrong type; expected an"),
        ("[wake]\nthreshold = 1.5\n", r"\[wake\] threshold = 1.5 is out of range; allowed: 0.0 <"),
        ("[wake]\nthreshold = 0\n", r"\[wake\] threshold = 0.0 is out of range"),
        ("[listen]\nsilence_timeout = 0.01\n", r"\[listen\] silence_timeout = 0.01 is out of"),
        ("[audio]\ndevice = 1.5\n", r"\[audio\] device = 1.5 .* expected a string or an integer"),
        ("wake = 3\n", r"wake must be a table"),
        ("[wake]\nmodels = []\n", r"\[wake\] models is empty"),
        ("[wake.overrides.alexa]\nthreshold = 0.6\n", r"\[wake.overrides.alexa\] names no model"),
        ("[wake.overrides.hey_jarvis]\nthreshhold = 0.6\n", r"unknown key \[wake.overrides.hey_"),
        ("[wake.overrides.hey_jarvis]\npatience = 0\n", r"patience = 0 is out of range"),
        ("[wake\n", r"not valid TOML"),
    ],
)
def test_every_kind_of_mistake_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert re.search(expected, error_for(tmp_path, text))


def test_overrides_and_custom_model_names() -> None:
    config = parse_config(
        {
            "wake": {
                "models": ["hey_jarvis", "/models/my_word.onnx"],
                "threshold": 0.5,
                "overrides": {"my_word": {"threshold": 0.8, "patience": 3}},
            }
        },
        "test.toml",
    )
    assert config.wake.threshold_for("my_word") == 0.8
    assert config.wake.patience_for("my_word") == 3
    assert config.wake.threshold_for("hey_jarvis") == 0.5
    assert config.wake.patience_for("hey_jarvis") == 1


def test_integers_are_accepted_as_numbers() -> None:
    config = parse_config({"listen": {"max_utterance": 20}}, "test.toml")
    assert config.listen.max_utterance == 20.0
    assert isinstance(config.listen.max_utterance, float)


def test_printed_config_round_trips() -> None:
    config = parse_config(
        {"wake": {"models": ["alexa"], "overrides": {"alexa": {"patience": 2}}}}, "x.toml"
    )
    import tomli_w

    again = parse_config(tomllib.loads(tomli_w.dumps(to_toml_dict(config))), "x.toml")
    assert again == config


def test_cli_exits_78_on_config_errors(tmp_path: Path) -> None:
    bad = write(tmp_path, "[wake]\nthreshold = 2\n")
    for command in (["config"], ["run", "--input", "nothing.wav"], ["models", "pull"]):
        result = subprocess.run(
            [sys.executable, "-m", "speech2image.cli", *command, "--config", str(bad)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == EX_CONFIG, result.stderr
        assert f"{bad}: [wake] threshold = 2.0 is out of range" in result.stderr
        assert "Traceback" not in result.stderr
