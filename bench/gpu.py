"""`make bench-gpu`: sd-turbo on a CUDA GPU, the figures users of a GPU care about.

    .venv/bin/speech2image models pull     # once, with network: fetches stabilityai/sd-turbo
    make bench-gpu                         # writes the "gpu" section of BENCHMARKS.md

Times 512x512 images at 1 and 4 steps in float16, plain, with channels-last, and with
torch.compile (after its warm-up compile), and the whole path from the end of a
spoken request to the PNG on disk (the end-pointer's silence timeout excluded: it
is a setting, not a cost). The GPU's name is recorded with the figures.
Anchor, published: 38.2 ms per 512x512 sd-turbo image (1 step) on an A100 with ONNX
Runtime CUDA (huggingface.co/onnxruntime/sd-turbo); plain PyTorch up to about twice that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.__main__ import OUT, merge
from bench.images import Clock, request_audio
from speech2image.config import Config, ImageConfig
from tests.support import write_wav


def time_images(image: ImageConfig, repeats: int) -> float:
    import torch

    from speech2image.images.generate import Generator

    generator = Generator(image, "bench-gpu")
    generator.warm_up()
    generator.generate("warm up at full size", seed=0)
    times = []
    for seed in range(repeats):
        torch.cuda.synchronize()
        started = time.perf_counter()
        generator.generate("a red fox sleeping under a cherry tree, photo", seed=seed)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def end_of_speech_to_png(repeats: int) -> float:
    """Utterance handed on -> PNG on disk, through the daemon's own stages."""
    from speech2image.daemon import Daemon
    from speech2image.listening.audio import FileSource

    with tempfile.TemporaryDirectory() as tmp:
        config = replace(Config(), gallery=replace(Config().gallery, dir=tmp))
        wav = write_wav(Path(tmp) / "requests.wav", request_audio(repeats))
        clock = Clock()
        daemon = Daemon(config, clock)
        daemon.run(FileSource(wav, realtime=True))
        daemon.close()
    spans = [
        clock.seen[("image", id_)][0] - when
        for (kind, id_), (when, _) in clock.seen.items()
        if kind == "utterance" and ("image", id_) in clock.seen
    ]
    return statistics.median(spans)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench-gpu: no CUDA GPU here; nothing measured", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0)
    base = ImageConfig(device="cuda", dtype="float16")
    rows = []
    for steps in (1, 4):
        for label, options in (
            ("plain", {}),
            ("channels-last", {"channels_last": True}),
            ("torch.compile", {"compile": True}),
        ):
            config = replace(base, steps=steps, **options)
            rows.append(f"| {steps} | {label} | {time_images(config, args.repeats):.3f} s |")
    speech_to_png = end_of_speech_to_png(5)
    body = "\n".join(
        [
            "## GPU: sd-turbo 512x512, float16",
            "",
            f"On {gpu}, torch {torch.__version__}; median of {args.repeats} images after warm-up.",
            "",
            "| steps | variant | seconds per image |",
            "|---|---|---|",
            *rows,
            "",
            f"Utterance handed on -> PNG on disk (transcription, moderation, 1 step, write): "
            f"{speech_to_png:.3f} s median.",
        ]
    )
    OUT.write_text(merge(OUT.read_text(encoding="utf-8"), "gpu", body), encoding="utf-8")
    print(f"bench-gpu: wrote the gpu section of {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
