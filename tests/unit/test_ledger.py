"""The one-terminal-event contract, and the worker that keeps it when a handler breaks."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from speech2image.events import REJECT_REASONS, Accepted, Event, ImageWritten, Rejected, Wake
from speech2image.ledger import Ledger
from speech2image.request import Request
from speech2image.worker import Worker


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [f"{e.type}:{e.reason}" if isinstance(e, Rejected) else e.type for e in self.events]


def image(request_id: str) -> ImageWritten:
    return ImageWritten(
        id=request_id, t=1.0, path="x.png", prompt="p", seed=1, model="m", seconds=0
    )


@pytest.fixture
def ledger() -> tuple[Ledger, Recorder]:
    sink = Recorder()
    return Ledger(sink, clock=lambda: 2.5), sink


def test_first_terminal_event_ends_the_request_and_a_second_is_dropped(
    ledger: tuple[Ledger, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    book, sink = ledger
    request = Request.start("microphone")
    book.open(request)
    book.emit(Wake(id=request.id, t=0.0, model="hey_jarvis", score=0.9))
    book.emit(Accepted(id=request.id, t=0.1, text="a fox"))
    book.emit(image(request.id))
    with caplog.at_level(logging.ERROR, logger="speech2image.ledger"):
        book.emit(Rejected(id=request.id, t=3.0, reason="error"))
    assert sink.types() == ["wake", "accepted", "image"]
    assert "already ended with image" in caplog.text
    assert book.pending() == []


def test_terminal_event_for_an_unknown_request_is_dropped(
    ledger: tuple[Ledger, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    book, sink = ledger
    with caplog.at_level(logging.ERROR, logger="speech2image.ledger"):
        book.emit(image("never-opened"))
    assert sink.events == []
    assert "never opened" in caplog.text


def test_fail_ends_an_open_request_with_error_once(ledger: tuple[Ledger, Recorder]) -> None:
    book, sink = ledger
    request = Request.start("file")
    book.open(request)
    book.fail(request.id, "image", "CUDA out of memory")
    book.fail(request.id, "gallery", "disk full")  # already ended: nothing more is said
    assert sink.types() == ["error", "rejected:error"]
    rejected = sink.events[-1]
    assert isinstance(rejected, Rejected)
    assert rejected.detail == "image: CUDA out of memory"
    assert rejected.t == 2.5


def test_abandon_ends_every_open_request_as_shutdown(ledger: tuple[Ledger, Recorder]) -> None:
    book, sink = ledger
    done, waiting, drawing = (Request.start("microphone") for _ in range(3))
    for request in (done, waiting, drawing):
        book.open(request)
    book.emit(image(done.id))
    assert book.abandon_open("stopped") == 2
    ended = {e.id: e for e in sink.events if isinstance(e, Rejected)}
    assert set(ended) == {waiting.id, drawing.id}
    assert {e.reason for e in ended.values()} == {"shutdown"}
    assert book.abandon_open("again") == 0


def test_an_id_cannot_be_opened_twice(ledger: tuple[Ledger, Recorder]) -> None:
    book, _ = ledger
    request = Request.start("file")
    book.open(request)
    book.emit(image(request.id))
    with pytest.raises(ValueError, match="already in use"):
        book.open(request)


def test_every_reason_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for reason in REJECT_REASONS:
        assert f"| `{reason}` |" in readme, f"README's table of reasons lacks {reason!r}"


def test_a_handler_that_raises_still_ends_its_request(ledger: tuple[Ledger, Recorder]) -> None:
    """A bug after `accepted` is `rejected: error`, and the worker lives on."""
    book, sink = ledger
    handled: list[str] = []

    def handle(request: Request) -> None:
        if request.prompt == "bug":
            raise KeyError("oops")
        handled.append(request.id)
        book.emit(image(request.id))

    worker: Worker[Request] = Worker(
        "test", handle, 4, lambda request, exc: book.fail(request.id, "test", repr(exc))
    )
    worker.start()
    broken, fine = Request.start("file", prompt="bug"), Request.start("file", prompt="fox")
    for request in (broken, fine):
        book.open(request)
        assert worker.submit(request, wait=True)
    worker.close()
    assert worker.join(5)
    assert handled == [fine.id]
    ends = {e.id: e.type for e in sink.events if e.type in ("image", "rejected")}
    assert ends == {broken.id: "rejected", fine.id: "image"}


def test_full_queue_refuses_at_once_and_cancel_ends_a_waiting_submit() -> None:
    release = threading.Event()
    worker: Worker[int] = Worker("test", lambda _item: release.wait(5), 1, lambda _i, _e: None)
    worker.start()
    assert worker.submit(1, wait=False)  # taken by the thread
    time.sleep(0.2)
    assert worker.submit(2, wait=False)  # queued
    assert not worker.submit(3, wait=False)  # full: "busy"
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(worker.submit(4, wait=True)))
    waiter.start()
    time.sleep(0.3)
    assert waited == []  # still waiting for room
    worker.cancel()
    waiter.join(2)
    assert waited == [False]
    release.set()
    assert worker.join(5)


def test_a_picture_being_stored_is_waited_for_not_abandoned_under_it(
    ledger: tuple[Ledger, Recorder],
) -> None:
    """The race a stop deadline creates: the picture is written as the daemon gives up."""
    book, sink = ledger
    writing, queued = Request.start("file"), Request.start("file")
    book.open(writing)
    book.open(queued)
    assert book.claim(writing.id)

    def finish_writing() -> None:
        time.sleep(0.3)  # the PNG is being written
        book.emit(image(writing.id))
        book.release(writing.id)

    writer = threading.Thread(target=finish_writing)
    writer.start()
    assert book.abandon_open("stopped", wait=5.0) == 1
    writer.join()
    ends = {e.id: e.type for e in sink.events}
    assert ends == {writing.id: "image", queued.id: "rejected"}
    assert not book.claim(queued.id)  # ended: nothing may be stored for it any more
