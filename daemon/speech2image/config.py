"""Configuration: one frozen dataclass per TOML table, strict validation.

A typo in a config file must never be silently ignored: a user who writes
``treshold = 0.6`` would otherwise run with the default and wonder why nothing
changed. Every unknown table or key, wrong type and out-of-range value is a
:class:`ConfigError` naming the file, the key and what is allowed; the CLI turns
it into exit status 78 (``EX_CONFIG``) so systemd does not restart-loop on it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import platformdirs

EX_CONFIG = 78
ENV_VAR = "SPEECH2IMAGE_CONFIG"
BUILTIN = "<built-in defaults>"


class ConfigError(Exception):
    """A config problem a user must fix; the message says where and how."""


def _spec(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] = (),
) -> Any:
    """A dataclass field carrying what it allows, so validation is data, not code."""
    return field(default=default, metadata=_limits(lo, hi, lo_open, choices))


def _limits(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] = (),
) -> dict[str, Any]:
    """For a list, ``choices`` limits its items; for a table of numbers, its keys."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices}


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: where sound comes from."""

    device: str | int = _spec("")  # "" = system default; else name substring or index
    samplerate: int = _spec(0, lo=0, hi=384000)  # 0 = 16 kHz if supported, else device default
    queue_seconds: float = _spec(2.0, lo=0.2, hi=60.0)
    reconnect_max_delay: float = _spec(30.0, lo=0.5, hi=3600.0)


@dataclass(frozen=True)
class WakeOverride:
    """``[wake.overrides.<model>]``: per-model threshold and patience."""

    threshold: float | None = _spec(None, lo=0.0, hi=1.0, lo_open=True)  # None: [wake] threshold
    patience: int | None = _spec(None, lo=1, hi=50)  # None: [wake] patience


@dataclass(frozen=True)
class WakeConfig:
    """``[wake]``: which wake words to listen for and how eagerly."""

    models: tuple[str, ...] = _spec(("hey_jarvis",))
    threshold: float = _spec(0.5, lo=0.0, hi=1.0, lo_open=True)
    patience: int = _spec(1, lo=1, hi=50)
    refractory: float = _spec(2.0, lo=0.0, hi=60.0)
    model_dir: str = _spec("")  # "" = the cache that `speech2image models pull` fills
    overrides: dict[str, WakeOverride] = field(default_factory=dict)

    def threshold_for(self, model: str) -> float:
        override = self.overrides.get(model)
        if override is None or override.threshold is None:
            return self.threshold
        return override.threshold

    def patience_for(self, model: str) -> int:
        override = self.overrides.get(model)
        if override is None or override.patience is None:
            return self.patience
        return override.patience


@dataclass(frozen=True)
class ListenConfig:
    """``[listen]``: how an utterance is cut out after the wake word."""

    vad_threshold: float = _spec(0.5, lo=0.05, hi=0.95)
    silence_timeout: float = _spec(0.7, lo=0.1, hi=10.0)
    max_utterance: float = _spec(15.0, lo=1.0, hi=120.0)
    no_speech_timeout: float = _spec(4.0, lo=0.5, hi=60.0)
    pre_roll: float = _spec(0.2, lo=0.0, hi=2.0)
    max_wake_tail: float = _spec(0.5, lo=0.0, hi=3.0)


@dataclass(frozen=True)
class SpeechConfig:
    """``[speech]``: faster-whisper, tuned for short spoken prompts."""

    model: str = _spec("tiny.en")  # a faster-whisper name or a local CTranslate2 folder
    device: str = _spec("auto", choices=("auto", "cpu", "cuda"))
    compute_type: str = _spec("auto")  # auto: int8 on CPU, float16 on CUDA
    cpu_threads: int = _spec(0, lo=0, hi=256)  # 0 = as many as cores, up to 4
    language: str = _spec("en")
    beam_size: int = _spec(1, lo=1, hi=10)
    # Primes the decoder for image prompts; measurably fewer mishearings on short requests.
    initial_prompt: str = _spec("A picture of")
    no_speech_threshold: float = _spec(0.6, lo=0.0, hi=1.0)
    log_prob_threshold: float = _spec(-1.0, lo=-20.0, hi=0.0)


LABELS = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
    "sexual_explicit",
)
# 0.7 is the original app's `toxicity > 0.7`. The profanity model, which reports
# `obscene`, flagged 2.7 % of the benign prompts in train.tsv at 0.7 and 1.2 % at 0.85.
DEFAULT_THRESHOLDS = {**dict.fromkeys(LABELS, 0.7), "obscene": 0.85}


@dataclass(frozen=True)
class ModerationConfig:
    """``[moderation]``: the toxicity gate between transcript and image."""

    backends: tuple[str, ...] = _spec(
        ("profanity", "lexicon", "semantic"),
        choices=("profanity", "lexicon", "semantic", "transformers"),
    )
    thresholds: dict[str, float] = field(
        default_factory=DEFAULT_THRESHOLDS.copy,
        metadata=_limits(lo=0.0, hi=1.0, lo_open=True, choices=LABELS),
    )
    transformers_model: str = _spec("")  # a local text-classification model folder
    block: tuple[str, ...] = _spec(())  # extra words and phrases to reject
    allow: tuple[str, ...] = _spec(())  # phrases that are fine even if they contain a blocked word

    def threshold(self, label: str) -> float:
        return self.thresholds.get(label, DEFAULT_THRESHOLDS[label])


@dataclass(frozen=True)
class ImageConfig:
    """``[image]``: the Stable Diffusion model and how it runs."""

    model: str = _spec("stabilityai/sd-turbo")  # a Hugging Face id (local cache) or a folder
    device: str = _spec("auto", choices=("auto", "cpu", "cuda"))
    dtype: str = _spec("auto", choices=("auto", "float16", "bfloat16", "float32"))
    width: int = _spec(512, lo=64, hi=2048)
    height: int = _spec(512, lo=64, hi=2048)
    steps: int = _spec(1, lo=1, hi=150)
    guidance: float = _spec(0.0, lo=0.0, hi=30.0)
    negative_prompt: str = _spec("")
    seed: int = _spec(-1, lo=-1, hi=2**32 - 1)  # -1 = a new random seed per image (recorded)
    scheduler: str = _spec("")  # "" = the model's own; else a diffusers scheduler class name
    queue: int = _spec(2, lo=1, hi=64)  # requests waiting for the GPU before "busy"
    channels_last: bool = _spec(False)
    attention_slicing: bool = _spec(False)
    vae_tiling: bool = _spec(False)
    cpu_offload: bool = _spec(False)
    compile: bool = _spec(False)


@dataclass(frozen=True)
class GalleryConfig:
    """``[gallery]``: where images go."""

    dir: str = _spec("outputs")  # relative paths resolve against the working directory


@dataclass(frozen=True)
class NotifyConfig:
    """``[notify]``: desktop notifications, each kind switchable."""

    enabled: bool = _spec(True)
    image: bool = _spec(True)
    toxic: bool = _spec(True)
    empty: bool = _spec(True)
    busy: bool = _spec(True)
    error: bool = _spec(True)
    timeout: float = _spec(8.0, lo=0.0, hi=3600.0)  # seconds on screen; 0 = until dismissed


@dataclass(frozen=True)
class Config:
    """The whole effective configuration, and the file it came from."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    source: str = field(default=BUILTIN, compare=False)


TABLES: dict[str, type[Any]] = {
    "audio": AudioConfig,
    "wake": WakeConfig,
    "listen": ListenConfig,
    "speech": SpeechConfig,
    "moderation": ModerationConfig,
    "image": ImageConfig,
    "gallery": GalleryConfig,
    "notify": NotifyConfig,
}


def default_user_config() -> Path:
    return platformdirs.user_config_path("speech2image") / "config.toml"


def find_config_file(explicit: str | None) -> Path | None:
    """``--config``, then ``$SPEECH2IMAGE_CONFIG``, then the user file; None = defaults.

    A file named explicitly (flag or variable) must exist: silently falling back to
    defaults would hide the typo in its path.
    """
    for origin, value in (("--config", explicit), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(f"{origin}: config file {path} does not exist")
            return path
    user = default_user_config()
    return user if user.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    path = find_config_file(explicit)
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    tables: dict[str, Any] = {}
    for name, value in data.items():
        if name not in TABLES:
            allowed = ", ".join(f"[{t}]" for t in TABLES)
            raise ConfigError(f"{source}: unknown table [{name}]; allowed tables: {allowed}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a table ([{name}]), not a value")
        tables[name] = _build(TABLES[name], value, source, name)
    config = Config(**tables, source=source)
    _check_wake_models(config.wake, source)
    return config


def wake_model_name(entry: str) -> str:
    """How events and overrides call a wake word: its name, or a custom file's stem."""
    return Path(entry).stem if entry.endswith(".onnx") else entry


def _check_wake_models(wake: WakeConfig, source: str) -> None:
    """Rules that span keys: at least one model, and overrides only for listed models."""
    if not wake.models:
        raise ConfigError(f"{source}: [wake] models is empty; name at least one wake word")
    names = {wake_model_name(m) for m in wake.models}
    for name in wake.overrides:
        if name not in names:
            listed = ", ".join(sorted(names))
            raise ConfigError(
                f"{source}: [wake.overrides.{name}] names no model in [wake] models ({listed})"
            )


def _build(cls: type[Any], table: Mapping[str, Any], source: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in fields:
            allowed = ", ".join(fields)
            raise ConfigError(f"{source}: unknown key [{where}] {key}; allowed keys: {allowed}")
        key_path = f"[{where}] {key}"
        value = _coerce(raw, hints[key], source, key_path, f"{where}.{key}")
        _check_value(value, fields[key].metadata, source, key_path)
        values[key] = value
    return cls(**values)


def _coerce(raw: Any, hint: Any, source: str, key: str, table_path: str) -> Any:
    """Check a TOML value against a field's type; the few conversions are lossless."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not (isinstance(raw, list) and all(isinstance(item, str) for item in raw)):
            _type_error(source, key, raw, "a list of strings")
        return tuple(raw)
    if origin is dict and isinstance(args[1], type) and dataclasses.is_dataclass(args[1]):
        return _coerce_tables(raw, args[1], source, key, table_path)
    if origin is dict:
        if not isinstance(raw, dict):
            _type_error(source, key, raw, "a table")
        return {name: _coerce(v, args[1], source, f"{key}.{name}", "") for name, v in raw.items()}
    if origin in (types.UnionType, typing.Union):
        if not any(_matches(raw, arg) for arg in args):
            expected = " or ".join(_type_name(a) for a in args if a is not type(None))
            _type_error(source, key, raw, expected)
        return float(raw) if float in args and isinstance(raw, int) else raw
    if not _matches(raw, hint):
        _type_error(source, key, raw, _type_name(hint))
    return float(raw) if hint is float else raw


def _coerce_tables(
    raw: Any, item_cls: type[Any], source: str, key: str, table_path: str
) -> dict[str, Any]:
    """A table of sub-tables, like ``[wake.overrides.hey_jarvis]``."""
    if not isinstance(raw, dict):
        _type_error(source, key, raw, "a table")
    return {
        name: _build(
            item_cls, _as_table(sub, source, f"{key}.{name}"), source, f"{table_path}.{name}"
        )
        for name, sub in raw.items()
    }


def _as_table(raw: Any, source: str, key: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        _type_error(source, key, raw, "a table")
    return typing.cast(Mapping[str, Any], raw)


def _matches(raw: Any, hint: Any) -> bool:
    """TOML integers are fine where a number is wanted; booleans are never numbers."""
    if isinstance(raw, bool):
        return hint is bool
    if hint is float:
        return isinstance(raw, int | float)
    return isinstance(raw, hint)


def _type_name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(hint, str(hint))


def _type_error(source: str, key: str, raw: Any, expected: str) -> NoReturn:
    raise ConfigError(f"{source}: {key} = {raw!r} has the wrong type; expected {expected}")


def _check_value(value: Any, meta: Mapping[str, Any], source: str, key: str) -> None:
    """Range for numbers, choices for strings; lists and tables are checked item by item."""
    choices: tuple[str, ...] = meta.get("choices", ())
    if isinstance(value, dict):
        for name, item in value.items():
            if choices and name not in choices:
                _choice_error(source, f"{key}.{name}", name, choices)
            if not dataclasses.is_dataclass(item):
                _check_value(item, {**meta, "choices": ()}, source, f"{key}.{name}")
    elif isinstance(value, tuple):
        for item in value:
            if choices and item not in choices:
                _choice_error(source, key, item, choices)
    elif isinstance(value, str):
        if choices and value not in choices:
            _choice_error(source, key, value, choices)
    elif not isinstance(value, bool) and isinstance(value, int | float):
        _check_range(value, meta, source, key)


def _choice_error(source: str, key: str, value: str, choices: tuple[str, ...]) -> NoReturn:
    allowed = ", ".join(choices)
    raise ConfigError(f"{source}: {key}: {value!r} is not allowed; choose from {allowed}")


def _check_range(value: float, meta: Mapping[str, Any], source: str, key: str) -> None:
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        low = f"{lo} < " if lo_open else f"{lo} <= "
        raise ConfigError(
            f"{source}: {key} = {value!r} is out of range; allowed: {low}value <= {hi}"
        )


def to_toml_dict(config: Config) -> dict[str, Any]:
    """The config as plain TOML-able tables (the inverse of :func:`parse_config`)."""
    out: dict[str, Any] = {}
    for name in TABLES:
        out[name] = _plain(dataclasses.asdict(getattr(config, name)))
    return out


def _plain(table: Mapping[str, Any]) -> dict[str, Any]:
    """TOML has no null and no tuple: drop unset optionals, turn tuples into lists."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out[key] = {k: _plain(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif isinstance(value, tuple):
            out[key] = list(value)
        elif value is not None:
            out[key] = value
    return out
