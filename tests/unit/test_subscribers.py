"""Subscribers: every callback hears each value; one that raises hurts no other."""

from __future__ import annotations

import logging

import pytest

from speech2image.subscribers import Subscribers


def test_a_failing_subscriber_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[int] = []

    def broken(_value: int) -> None:
        raise RuntimeError("a bug in one client")

    subscribers: Subscribers[int] = Subscribers("test")
    subscribers.subscribe(broken)
    subscribers.subscribe(heard.append)
    with caplog.at_level(logging.ERROR):
        subscribers.publish(1)
    assert heard == [1]
    assert [r.getMessage() for r in caplog.records] == ["a test subscriber failed"]


def test_unsubscribe_even_from_inside_a_callback() -> None:
    heard: list[str] = []
    subscribers: Subscribers[str] = Subscribers("test")

    def once(value: str) -> None:
        heard.append(value)
        unsubscribe()

    unsubscribe = subscribers.subscribe(once)
    subscribers.publish("first")
    subscribers.publish("second")
    unsubscribe()  # twice is harmless
    assert heard == ["first"]
    assert len(subscribers) == 0
