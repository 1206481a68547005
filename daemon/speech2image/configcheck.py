"""Validation of config tables against their dataclasses: types, ranges, choices.

The rules are data on the dataclass fields (:func:`spec`); this module reads them
and turns a TOML table into the dataclass or a :class:`ConfigError` naming the
file, the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from typing import Any, NoReturn


class ConfigError(Exception):
    """A config problem a user must fix; the message says where and how."""


def spec(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] = (),
    multiple_of: int | None = None,
) -> Any:
    """A dataclass field carrying what it allows, so validation is data, not code."""
    return field(default=default, metadata=limits(lo, hi, lo_open, choices, multiple_of))


def limits(
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] = (),
    multiple_of: int | None = None,
) -> dict[str, Any]:
    """For a list, ``choices`` limits its items; for a table of numbers, its keys.

    ``multiple_of`` is for sizes a model can only work in steps of (image pixels).
    """
    return {
        "lo": lo,
        "hi": hi,
        "lo_open": lo_open,
        "choices": choices,
        "multiple_of": multiple_of,
    }


def build_table(cls: type[Any], table: Mapping[str, Any], source: str, where: str) -> Any:
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
        name: build_table(
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
    allowed = ", ".join(choice or '""' for choice in choices)  # "" must stay visible
    raise ConfigError(f"{source}: {key}: {value!r} is not allowed; choose from {allowed}")


def _check_range(value: float, meta: Mapping[str, Any], source: str, key: str) -> None:
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    if not _in_range(value, meta):
        low = f"{lo} < " if lo_open else f"{lo} <= "
        raise ConfigError(
            f"{source}: {key} = {value!r} is out of range; allowed: {low}value <= {hi}"
        )
    step = meta.get("multiple_of")
    if step and value % step:
        nearest = " or ".join(str(n) for n in _nearest_multiples(value, step, meta))
        raise ConfigError(
            f"{source}: {key} = {value!r} is not a multiple of {step}; nearest allowed: {nearest}"
        )


def _nearest_multiples(value: float, step: int, meta: Mapping[str, Any]) -> list[int]:
    """The multiples of ``step`` just below and above ``value`` that are in range."""
    below = int(value // step) * step
    return [n for n in (below, below + step) if _in_range(n, meta)]


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value <= lo if meta.get("lo_open", False) else value < lo):
        return False
    return hi is None or value <= hi


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` lets only this machine connect (127.0.0.0/8, ::1, its
    IPv4-mapped forms, localhost); a wildcard (0.0.0.0, ::) is everything, not loopback."""
    name = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if name in ("localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
