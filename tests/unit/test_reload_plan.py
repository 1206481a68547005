"""Which parts a config reload rebuilds: only those whose own tables changed."""

from __future__ import annotations

import dataclasses

from speech2image.config import TABLES, Config, parse_config
from speech2image.reload import PARTS, changed_tables, parts_to_rebuild


def test_the_same_config_from_another_file_changes_nothing() -> None:
    assert changed_tables(Config(), dataclasses.replace(Config(), source="/etc/x.toml")) == set()


def test_a_model_reloads_only_when_its_own_table_changed() -> None:
    new = parse_config({"image": {"steps": 2}, "gallery": {"dir": "/tmp/g"}}, "t.toml")
    changed = changed_tables(Config(), new)
    assert changed == {"image", "gallery"}
    assert parts_to_rebuild(changed) == ["generator", "writer"]


def test_audio_and_debug_rebuild_no_part() -> None:
    """[audio] reopens the microphone (Daemon.swap) and [debug] is read per request."""
    new = parse_config({"audio": {"device": "USB"}, "debug": {"save_audio": True}}, "t.toml")
    assert changed_tables(Config(), new) == {"audio", "debug"}
    assert parts_to_rebuild(changed_tables(Config(), new)) == []


def test_the_listener_follows_wake_listen_and_feedback() -> None:
    for table, values in (
        ("wake", {"threshold": 0.6}),
        ("listen", {"silence_timeout": 1.0}),
        ("feedback", {"sound": False}),
    ):
        assert parts_to_rebuild(changed_tables(Config(), parse_config({table: values}, "t"))) == [
            "listener"
        ]


def test_every_table_is_either_a_part_or_handled_elsewhere() -> None:
    # [audio] reopens the microphone, [debug] is read per request, [wyoming] needs a
    # restart (the reload says so)
    covered = set().union(*PARTS.values()) | {"audio", "debug", "wyoming"}
    assert covered == set(TABLES)
