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
    VAD_HYSTERESIS,
    Config,
    ConfigError,
    find_config_file,
    load_config,
    parse_config,
    to_toml_dict,
)
from speech2image.vocabulary import COMPUTE_TYPES, WHISPER_LANGUAGES

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
        ("[image]\nwidth = 500\n", r"\[image\] width = 500 is not a multiple of 8; nearest al"),
        ("[image]\nheight = 1001\n", r"height = 1001 is not a multiple of 8; .*: 1000 or 1008$"),
        ("[image]\nwidth = 2050\n", r"\[image\] width = 2050 is out of range"),
        ("[listen]\nvad_threshold = 0.15\n", r"\[listen\] vad_threshold = 0.15 is too low: sp"),
        ("[listen]\nvad_threshold = 0.05\n", r"below vad_threshold - 0.15, which would never h"),
        ('[speech]\ncompute_type = "int4"\n', r"\[speech\] compute_type: 'int4' is not allowed;"),
        ('[speech]\nlanguage = "english"\n', r"\[speech\] language: 'english' is not allowed"),
        ('[speech]\nlanguage = "de"\n', r"\[speech\] model = 'tiny.en' is English-only, but"),
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


@pytest.mark.parametrize(
    ("size", "nearest"), [(500, "496 or 504"), (65, "64 or 72"), (2047, "2040 or 2048")]
)
def test_image_size_error_names_the_nearest_multiples_of_8(
    tmp_path: Path, size: int, nearest: str
) -> None:
    message = error_for(tmp_path, f"[image]\nwidth = 512\nheight = {size}\n")
    assert message.endswith(
        f"[image] height = {size} is not a multiple of 8; nearest allowed: {nearest}"
    )


def test_image_sizes_in_steps_of_8_are_fine() -> None:
    config = parse_config({"image": {"width": 64, "height": 1016}}, "x.toml")
    assert (config.image.width, config.image.height) == (64, 1016)


def test_vad_threshold_must_leave_room_for_the_hysteresis(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[listen]\nvad_threshold = 0.1\n")
    assert "[listen] vad_threshold = 0.1 is too low" in message
    assert "would never happen" in message
    assert "[listen] max_utterance" in message
    assert f"use a value above {VAD_HYSTERESIS}" in message
    ok = parse_config({"listen": {"vad_threshold": VAD_HYSTERESIS + 0.01}}, "x.toml")
    assert ok.listen.vad_threshold - VAD_HYSTERESIS > 0


def test_vad_uses_the_hysteresis_config_checks() -> None:
    from speech2image.listening import vad

    assert vad.HYSTERESIS == VAD_HYSTERESIS
    assert vad.is_speech(0.36, was_speech=True, threshold=0.5)
    assert not vad.is_speech(0.34, was_speech=True, threshold=0.5)


def test_compute_type_lists_exactly_ctranslate2s_types(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[speech]\ncompute_type = "fp16"\n')
    assert message.endswith(
        "choose from auto, default, int8, int8_float32, int8_float16, int8_bfloat16, "
        "int16, float16, bfloat16, float32"
    )
    for compute_type in COMPUTE_TYPES:
        config = parse_config({"speech": {"compute_type": compute_type}}, "x.toml")
        assert config.speech.compute_type == compute_type


def test_compute_types_cover_what_ctranslate2_reports() -> None:
    import ctranslate2

    assert set(ctranslate2.get_supported_compute_types("cpu")) <= set(COMPUTE_TYPES)


def test_whisper_languages_are_faster_whispers_list() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # a dependency: never skipped

    assert tuple(_LANGUAGE_CODES) == WHISPER_LANGUAGES


def test_language_error_offers_auto_detect_and_the_codes(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[speech]\nmodel = "small"\nlanguage = "EN"\n')
    assert 'choose from "", af, am, ar,' in message
    assert message.endswith(", zh, yue")


@pytest.mark.parametrize(
    ("model", "language"),
    [("tiny.en", "en"), ("tiny.en", ""), ("small", "de"), ("large-v3-turbo", ""), ("/m/x", "fr")],
)
def test_model_and_language_that_fit(model: str, language: str) -> None:
    config = parse_config({"speech": {"model": model, "language": language}}, "x.toml")
    assert (config.speech.model, config.speech.language) == (model, language)


@pytest.mark.parametrize("model", ["tiny.en", "small.en", "/models/whisper-small.en/"])
def test_english_only_model_with_another_language_names_both_keys(
    tmp_path: Path, model: str
) -> None:
    message = error_for(tmp_path, f'[speech]\nmodel = "{model}"\nlanguage = "fr"\n')
    assert f"[speech] model = {model!r} is English-only, but [speech] language = 'fr'" in message
    assert 'set language = "en"' in message


def test_cli_exits_78_on_rules_that_would_fail_every_request(tmp_path: Path) -> None:
    rules = {
        "[image]\nwidth = 500\n": "[image] width = 500 is not a multiple of 8",
        '[speech]\nlanguage = "de"\n': "[speech] model = 'tiny.en' is English-only",
    }
    for text, expected in rules.items():
        bad = write(tmp_path, text)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "speech2image.cli",
                "run",
                "--input",
                "x.wav",
                "--config",
                str(bad),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == EX_CONFIG, result.stderr
        assert f"{bad}: {expected}" in result.stderr
        assert "Traceback" not in result.stderr


def test_moderation_languages_are_whisper_codes_and_not_empty() -> None:
    assert parse_config({}, "x.toml").moderation.languages == ("en",)
    both = parse_config({"moderation": {"languages": ["en", "es"]}}, "x.toml")
    assert both.moderation.languages == ("en", "es")
    with pytest.raises(ConfigError, match=r"\[moderation\] languages: 'english' is not allowed"):
        parse_config({"moderation": {"languages": ["english"]}}, "x.toml")
    with pytest.raises(ConfigError, match=r"languages is empty, so every request would be"):
        parse_config({"moderation": {"languages": []}}, "x.toml")
