"""One room cannot starve the others: the worker's lines per source, served in turn.

Real threads, a real worker: the handler first blocks on a gate, so the lines fill
before serving starts and the order it then records is the worker's choice alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from speech2image.worker import Worker, admits

Item = tuple[str, int]  # (source, number within the source)


class Gated:
    """A handler that records what it handles, holding the first item until released."""

    def __init__(self) -> None:
        self.handled: list[Item] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.errors: list[tuple[Item, Exception]] = []

    def __call__(self, item: Item) -> None:
        self.handled.append(item)
        self.started.set()
        assert self.release.wait(5), "the test never released the gate"

    def on_error(self, item: Item, exc: Exception) -> None:
        self.errors.append((item, exc))


def _source(item: Item) -> str:
    return item[0]


@pytest.fixture
def gated() -> Iterator[Gated]:
    handler = Gated()
    yield handler
    handler.release.set()  # never leave a worker thread blocked behind a failed test
    assert handler.errors == []  # the worker hands a failed handler's error to on_error


def _worker_in_hand(handler: Gated, depth: int) -> Worker[Item]:
    """A started worker whose thread holds ("gate", 0), so every later item waits."""
    worker: Worker[Item] = Worker("test", handler, depth, handler.on_error, _source)
    worker.start()
    assert worker.submit(("gate", 0), wait=False)
    assert handler.started.wait(5)
    return worker


def _submit_all(worker: Worker[Item], items: list[Item]) -> None:
    for item in items:
        assert worker.submit(item, wait=False), item


@pytest.mark.parametrize(
    ("depth", "waiting", "mine", "expected"),
    [
        (1, 0, 0, True),  # one place: whoever comes first
        (1, 1, 0, False),  # full
        (2, 0, 0, True),
        (2, 1, 1, False),  # the last place is kept for a source with nothing waiting
        (2, 1, 0, True),  # ... which takes it
        (2, 2, 0, False),  # full: even a newcomer hears "busy"
        (4, 2, 2, True),  # places to spare: a busy room may queue more
        (4, 3, 3, False),
        (4, 3, 1, False),  # any source with something waiting leaves the last place
        (4, 3, 0, True),
        (4, 5, 0, False),  # never past depth (a depth lowered under a full queue)
    ],
)
def test_admission_keeps_the_last_place_for_a_source_with_nothing_waiting(
    depth: int, waiting: int, mine: int, expected: bool
) -> None:
    assert admits(depth, waiting, mine) is expected


def test_sources_are_served_in_turn_first_in_first_out_within_each(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=12)
    # Bursts, one source after another: served one from each, in first-queued order.
    _submit_all(worker, [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)])
    _submit_all(worker, [("c", 1), ("c", 2), ("c", 3), ("c", 4)])
    assert worker.waiting == 9
    worker.close()
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [
        ("gate", 0),
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("a", 2),
        ("b", 2),
        ("c", 2),
        ("a", 3),
        ("c", 3),
        ("c", 4),
    ]
    assert worker.waiting == 0


def test_a_source_that_comes_back_waits_behind_those_already_waiting() -> None:
    """Its line emptied, a source queues again: it joins the back of the turns."""
    handled: list[Item] = []
    release = threading.Event()
    workers: list[Worker[Item]] = []  # the handler submits to the worker that runs it

    def handle(item: Item) -> None:
        handled.append(item)
        if item == ("gate", 0):
            assert release.wait(5)
        if item == ("a", 1):  # "a" has nothing else waiting: it speaks again
            assert workers[0].submit(("a", 2), wait=False)

    errors: list[Exception] = []  # the worker hands the handler's failures to on_error
    worker: Worker[Item] = Worker("test", handle, 8, lambda _i, e: errors.append(e), _source)
    workers.append(worker)
    worker.start()
    try:
        assert worker.submit(("gate", 0), wait=False)
        _submit_all(worker, [("a", 1), ("b", 1), ("b", 2), ("c", 1)])
        worker.close()
    finally:
        release.set()
    assert worker.join(5)
    assert handled == [("gate", 0), ("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2)]
    assert errors == []


def test_one_source_cannot_take_every_place_but_another_still_can(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=3)
    _submit_all(worker, [("kitchen", 1), ("kitchen", 2)])
    assert not worker.submit(("kitchen", 3), wait=False)  # the last place is not its
    assert worker.submit(("bedroom", 1), wait=False)  # ... it is the bedroom's
    assert not worker.submit(("hall", 1), wait=False)  # full: the total cap
    assert not worker.submit(("bedroom", 2), wait=False)
    assert worker.waiting == 3
    worker.close()
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [("gate", 0), ("kitchen", 1), ("bedroom", 1), ("kitchen", 2)]


def test_one_place_goes_to_whoever_comes_first(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=1)
    assert worker.submit(("kitchen", 1), wait=False)
    assert not worker.submit(("bedroom", 1), wait=False)
    worker.close()
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [("gate", 0), ("kitchen", 1)]


def test_cancel_drops_every_line_and_the_thread_ends(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=6)
    _submit_all(worker, [("a", 1), ("a", 2), ("b", 1), ("c", 1)])
    worker.cancel()
    assert worker.waiting == 0
    assert not worker.submit(("d", 1), wait=False)  # a cancelled worker takes nothing new
    gated.release.set()  # the item in hand runs on, and nothing after it
    assert worker.join(5)
    assert gated.handled == [("gate", 0)]


def test_cancel_never_waits_for_the_lock(gated: Gated) -> None:
    """A signal handler may interrupt the very code that holds the lock: cancel must
    not wait for it, and the worker still ends with its lines dropped."""
    worker = _worker_in_hand(gated, depth=6)
    _submit_all(worker, [("a", 1), ("b", 1)])
    with worker._lock:  # the interrupted holder
        canceller = threading.Thread(target=worker.cancel)
        canceller.start()
        canceller.join(5)
        assert not canceller.is_alive()  # it returned while the lock was still held
        assert worker.waiting == 2  # so it could not drop the lines itself
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [("gate", 0)]
    assert worker.waiting == 0  # the thread dropped them as it ended


def test_close_drains_every_line_then_the_thread_ends(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=4)
    _submit_all(worker, [("a", 1), ("a", 2), ("b", 1)])
    worker.close()
    assert not worker.join(0.2)  # closed, but items wait: it stays for them
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [("gate", 0), ("a", 1), ("b", 1), ("a", 2)]


def test_a_handler_that_raises_is_reported_and_the_next_source_is_served() -> None:
    handled: list[Item] = []
    errors: list[tuple[Item, str]] = []

    def handle(item: Item) -> None:
        if item[0] == "broken":
            raise KeyError("oops")
        handled.append(item)

    worker: Worker[Item] = Worker(
        "test", handle, 4, lambda item, exc: errors.append((item, repr(exc))), _source
    )
    worker.start()
    for item in [("broken", 1), ("fine", 1), ("broken", 2), ("fine", 2)]:
        assert worker.submit(item, wait=True)
    worker.close()
    assert worker.join(5)
    assert handled == [("fine", 1), ("fine", 2)]
    assert errors == [(("broken", 1), "KeyError('oops')"), (("broken", 2), "KeyError('oops')")]


def _waiting_submit(worker: Worker[Item], item: Item) -> tuple[threading.Thread, list[bool]]:
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(worker.submit(item, wait=True)))
    waiter.start()
    return waiter, answers


def test_a_waiting_submit_gets_in_when_a_place_frees_and_leaves_the_last_to_others(
    gated: Gated,
) -> None:
    worker = _worker_in_hand(gated, depth=2)
    assert worker.submit(("file", 1), wait=True)
    waiter, answers = _waiting_submit(worker, ("file", 2))  # would take the last place
    waiter.join(0.3)
    assert answers == []  # still waiting for its place
    assert worker.submit(("web", 1), wait=False)  # the last place: another source's
    gated.release.set()  # the gate, then "file" 1, then "web" 1 free places
    waiter.join(5)
    assert answers == [True]
    worker.close()
    assert worker.join(5)
    assert gated.handled == [("gate", 0), ("file", 1), ("web", 1), ("file", 2)]


def test_cancel_ends_a_waiting_submit_with_false(gated: Gated) -> None:
    worker = _worker_in_hand(gated, depth=1)
    assert worker.submit(("file", 1), wait=True)
    waiter, answers = _waiting_submit(worker, ("file", 2))
    waiter.join(0.3)
    assert answers == []  # full: waiting
    worker.cancel()
    waiter.join(5)
    assert answers == [False]
    gated.release.set()
    assert worker.join(5)
    assert gated.handled == [("gate", 0)]
