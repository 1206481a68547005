"""Our Wyoming speech-to-text, measured by a client we did not write: PyPI's
``wyoming-bench stt`` against ``speech2image serve`` (latency, real-time factor and
word error rate), on real and synthetic recordings from tests/data.

Its own report is kept as it printed it, beside the corpus it read.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from bench import rooms
from bench.rooms_peer import Daemon
from tests.support import JFK_SENTENCE, data_audio, espeak_prompts

CORPUS = {"jfk.flac": JFK_SENTENCE, **espeak_prompts()}  # tests/data file -> what is said
SERVE_TIMEOUT_S = 180.0


def write_corpus(folder: Path) -> None:
    """``wyoming-bench``'s corpus: ``<stem>.wav`` (16 kHz, 16-bit) and ``<stem>.txt``."""
    folder.mkdir(parents=True)
    for number, (name, text) in enumerate(CORPUS.items()):
        sf.write(folder / f"s{number}.wav", data_audio(name), 16000, subtype="PCM_16")
        (folder / f"s{number}.txt").write_text(text, encoding="utf-8")


def run_bench(port: int, corpus: Path, rounds: int) -> str:
    import subprocess

    program = shutil.which("wyoming-bench", path=str(Path(sys.executable).parent))
    if program is None:
        raise RuntimeError("wyoming-bench is missing: `make test` installs it (the test extra)")
    command = [program, "stt", f"127.0.0.1:{port}", "--corpus", str(corpus)]
    command += ["--mode", "non_streaming", "--rounds", str(rounds), "--warmup", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return done.stdout


def section(quick: bool) -> str:
    from tests.tinysd import build_tiny_pipeline

    with tempfile.TemporaryDirectory(prefix="s2i-asr-") as tmp:
        work = Path(tmp)
        model = build_tiny_pipeline(work / "tiny-sd")
        write_corpus(work / "corpus")
        daemon = Daemon(rooms.write_config(work, model, []), work)
        try:
            deadline = time.monotonic() + SERVE_TIMEOUT_S
            while not daemon.serving and time.monotonic() < deadline:
                time.sleep(0.2)
            port = served_port(daemon.log)
            report = run_bench(port, work / "corpus", 1 if quick else 3)
        finally:
            daemon.stop()
    wer = re.search(r"WER=\s*([0-9.]+)%", report)
    return "\n".join(
        [
            "## Speech-to-text over Wyoming, by wyoming-bench",
            "",
            "`wyoming-bench stt` (PyPI, not ours) against `speech2image serve` on loopback,",
            "non-streaming, whisper tiny.en int8 on the CPU; the corpus is tests/data/jfk.flac",
            "(a human recording, 11 s) and six espeak-ng prompts in two voices. Its report:",
            "",
            "```",
            report.strip(),
            "```",
            "",
            f"Word error rate over the corpus: {wer.group(1) if wer else '?'} %.",
        ]
    )


def served_port(log: list[str]) -> int:
    for line in log:
        found = re.search(r"wyoming: serving tcp://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise RuntimeError("speech2image serve never said where it listens:\n" + "".join(log))
