"""Drawing reports its steps: diffusers' step callback, through Draw, as `progress` events.

The real Generator on the tiny Stable Diffusion pipeline (``tests/tinysd.py``), the real
gallery writer and the real Ledger; only the event sink at the end is a list.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from speech2image.config import ImageConfig
from speech2image.events import Event, ImageWritten, Progress
from speech2image.gallery.writer import GalleryWriter
from speech2image.images.generate import GeneratedImage, Generator, StepCallback
from speech2image.ledger import Ledger
from speech2image.request import Request
from speech2image.steps import Draw, ToDraw

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # diffusers' schedulers call np.array() on tensors; numpy 2 deprecates how torch answers
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
STEPS = 3


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def generator(tiny_sd_model: Path) -> Generator:
    config = ImageConfig(model=str(tiny_sd_model), width=64, height=64, steps=STEPS, guidance=0.0)
    return Generator(config, "test.toml")


def pngs(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.png") if ".tmp" not in p.parts]


def draw(generator: Generator, gallery: Path) -> tuple[Request, Recorder, Path | None]:
    recorder = Recorder()
    ledger = Ledger(recorder, lambda: 0.0)
    writer = GalleryWriter(gallery)
    writer.prepare()
    request = Request.start("command-line", "test", prompt="a red fox in the snow", seed=7)
    ledger.open(request)
    path = Draw(generator, writer, ledger, lambda: 0.0)(ToDraw(request, time.monotonic()))
    return request, recorder, path


def test_each_step_is_a_progress_event_before_the_image(
    generator: Generator, tmp_path: Path
) -> None:
    request, recorder, path = draw(generator, tmp_path / "gallery")
    assert path is not None
    assert path.exists()
    progress = [(e.step, e.steps) for e in recorder.events if isinstance(e, Progress)]
    assert progress == [(1, STEPS), (2, STEPS), (3, STEPS)]
    assert [type(e) for e in recorder.events] == [Progress] * STEPS + [ImageWritten]
    assert {e.id for e in recorder.events} == {request.id}


def test_a_failing_progress_listener_breaks_nothing(generator: Generator) -> None:
    told: list[tuple[int, int]] = []

    def on_step(step: int, steps: int) -> None:
        told.append((step, steps))
        raise RuntimeError("a listener that breaks")

    made = generator.generate("a red fox", seed=3, on_step=on_step)
    assert told == [(1, STEPS), (2, STEPS), (3, STEPS)]  # still told of every step
    assert made.image.size == (64, 64)
    again = generator.generate("a red fox", seed=3)  # the callback changed no pixels
    assert made.image.tobytes() == again.image.tobytes()


def test_no_progress_after_the_request_has_ended(generator: Generator, tmp_path: Path) -> None:
    """A stop ends the request while it is drawn: later steps must not follow its end."""
    recorder = Recorder()
    ledger = Ledger(recorder, lambda: 0.0)
    writer = GalleryWriter(tmp_path / "gallery")
    writer.prepare()
    request = Request.start("command-line", "test", prompt="a red fox", seed=1)
    ledger.open(request)

    class StopsAfterFirstStep:
        """The real generator; the daemon is stopped once the first step is done."""

        def generate(
            self, prompt: str, seed: int | None = None, on_step: StepCallback | None = None
        ) -> GeneratedImage:
            def step(done: int, steps: int) -> None:
                assert on_step is not None
                on_step(done, steps)
                if done == 1:
                    ledger.abandon_open("stopped", wait=0.0)

            return generator.generate(prompt, seed, step)

    stopping = Draw(StopsAfterFirstStep(), writer, ledger, lambda: 0.0)
    assert stopping(ToDraw(request, time.monotonic())) is None
    assert pngs(tmp_path / "gallery") == []
    assert [e.type for e in recorder.events] == ["progress", "rejected"]
    assert recorder.events[-1].reason == "shutdown"  # type: ignore[attr-defined]
