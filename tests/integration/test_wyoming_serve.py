"""``speech2image serve`` as Home Assistant meets it: the real CLI with real models,
spoken to over TCP exactly as HA's ``wyoming`` integration does (``describe`` on one
connection, then a fresh connection per request), for the ASR and the handle service.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe, Info

from tests.support import JFK_SENTENCE, SPOKEN_PROMPTS, data_audio, espeak_prompt

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SERVING = re.compile(r"wyoming: serving tcp://127\.0\.0\.1:(\d+)")


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, gallery: Path) -> None:
        self.process = process
        self.port = port
        self.gallery = gallery


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, base_config: str, daemon_config_env: Path
) -> Iterator[Served]:
    from tests.conftest import with_base

    root = tmp_path_factory.mktemp("serve")
    gallery = root / "gallery"
    config = root / "config.toml"
    config.write_text(with_base(f'[gallery]\ndir = "{gallery}"\n', base_config), "utf-8")
    command = [sys.executable, "-m", "speech2image.cli", "serve", "--config", str(config)]
    command += ["--uri", "tcp://127.0.0.1:0"]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert process.stderr is not None
    port = None
    deadline = time.monotonic() + 120
    lines: list[str] = []
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = SERVING.search(line)
        port = int(match.group(1)) if match else None
    assert port is not None, "".join(lines)
    # keep reading, or a full pipe would block the daemon's logging
    threading.Thread(target=process.stderr.read, daemon=True).start()
    yield Served(process, port, gallery)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


async def ask(port: int, *events: Any) -> Any:
    """One connection, as Home Assistant opens one per request: send, read the answer."""
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        for event in events:
            await client.write_event(event.event())
        while True:
            answer = await asyncio.wait_for(client.read_event(), timeout=120)
            assert answer is not None, "the server closed the connection"
            if answer.type not in ("ping", "pong"):
                return answer
    finally:
        await client.disconnect()


def test_describe_then_info(served: Served) -> None:
    answer = asyncio.run(ask(served.port, Describe()))
    info = Info.from_event(answer)
    assert info.asr[0].models[0].languages == ["en"]
    assert len(info.handle) == 1
    assert info.handle[0].models[0].name  # the image model


def test_speech_to_text_like_home_assistant(served: Served) -> None:
    audio = data_audio("jfk.flac")
    chunks = [
        AudioChunk(rate=16000, width=2, channels=1, audio=audio[i : i + 1024].tobytes())
        for i in range(0, len(audio), 1024)
    ]
    start = AudioStart(rate=16000, width=2, channels=1)
    stop = AudioStop()
    answer = asyncio.run(ask(served.port, Transcribe(language="en"), start, *chunks, stop))
    text = Transcript.from_event(answer).text.lower()
    assert "ask not what your country can do for you" in text


def test_a_conversation_that_draws(served: Served) -> None:
    context = {"conversation_id": "01J", "satellite_id": "assist_satellite.kitchen"}
    asked = Transcript(text="A red fox in the snow.", context=context, language="en")
    answer = asyncio.run(ask(served.port, asked))
    assert Handled.is_type(answer.type), answer
    assert Handled.from_event(answer).text == "Drawing A red fox in the snow."
    deadline = time.monotonic() + 120
    sidecars: list[Path] = []
    while not sidecars and time.monotonic() < deadline:
        sidecars = [p for p in served.gallery.rglob("*.json") if ".tmp" not in p.parts]
        time.sleep(0.2)
    assert sidecars, "no picture arrived"
    record: dict[str, Any] = json.loads(sidecars[0].read_text(encoding="utf-8"))
    assert record["source"] == "wyoming"
    assert "satellite=assist_satellite.kitchen" in record["origin"]


def test_a_refusal_is_spoken(served: Served) -> None:
    asked = Transcript(text="I will kill my neighbour", context={"conversation_id": "x"})
    answer = asyncio.run(ask(served.port, asked))
    assert NotHandled.is_type(answer.type), answer
    assert NotHandled.from_event(answer).text == "I can't draw that."


CORPUS = {  # tests/data file -> what is said
    "jfk.flac": JFK_SENTENCE,
    espeak_prompt(1, "en-us"): SPOKEN_PROMPTS[1],
    espeak_prompt(2, "en+f3"): SPOKEN_PROMPTS[2],
    espeak_prompt(3, "en-us"): SPOKEN_PROMPTS[3],
}


def test_wyoming_bench_measures_our_speech_to_text(served: Served, tmp_path: Path) -> None:
    """PyPI's wyoming-bench, a client we did not write, transcribes a corpus through
    the ASR service; word error rate as tiny.en gets it on these recordings."""
    import shutil

    import soundfile as sf

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for number, (name, text) in enumerate(CORPUS.items()):
        sf.write(corpus / f"s{number}.wav", data_audio(name), 16000, subtype="PCM_16")
        (corpus / f"s{number}.txt").write_text(text, encoding="utf-8")
    bench = shutil.which("wyoming-bench", path=str(Path(sys.executable).parent))
    assert bench, "make test installs wyoming-bench (the test extra)"
    command = [bench, "stt", f"127.0.0.1:{served.port}", "--corpus", str(corpus)]
    command += ["--mode", "non_streaming", "--rounds", "1", "--warmup", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"WER=\s*([0-9.]+)%", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) <= 10.0, result.stdout


def test_the_running_daemon_serves_wyoming_too(
    tmp_path: Path, base_config: str, daemon_config_env: Path
) -> None:
    """``[wyoming] uri`` in the config: ``run`` (here on a paced file, as a microphone
    would be) answers Home Assistant beside its own listening."""
    from tests.conftest import with_base
    from tests.support import silence, write_wav

    config = tmp_path / "config.toml"
    table = '[wyoming]\nuri = "tcp://127.0.0.1:0"\n'
    config.write_text(with_base(table, base_config), encoding="utf-8")
    wav = write_wav(tmp_path / "quiet.wav", silence(120))
    command = [sys.executable, "-m", "speech2image.cli", "run", "--config", str(config)]
    command += ["--input", str(wav), "--realtime"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        port = None
        for line in process.stderr:
            match = SERVING.search(line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "the daemon never said where it serves Wyoming"
        threading.Thread(target=process.stderr.read, daemon=True).start()
        info = Info.from_event(asyncio.run(ask(port, Describe())))
        assert info.asr
        assert info.handle
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
