"""`make soak` in small: a few minutes of the soak mix through the real CLI.

The same mix as ``python -m bench.soak`` (bench/soak_mix.py: requests with harmless
and toxic prompts, wake words followed by nothing or noise, silence, background), fed
as fast as the stages go, and the same contract: every request ends in exactly one
terminal event, the gallery's PNGs are the `image` events, no frame is dropped.
Resident memory is sampled and printed (`pytest -s`), not judged: over a few minutes
it says little; `make soak` bounds it over an hour.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import soundfile

from bench.corpus import SAMPLE_RATE, espeak_version
from bench.soak import check_contract, memory, run_daemon, warm_up_end, write_config
from bench.soak_mix import build_mix

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(400),
]
SECONDS = 240.0
SEED = 0


@pytest.fixture(scope="session")
def soak_wav(pytestconfig: pytest.Config) -> tuple[Path, int]:
    """The mix as a WAV, and how many wake phrases it says; built once, then cached
    (with the espeak-ng renderings) under the pytest cache."""
    cache = pytestconfig.cache
    assert cache is not None
    folder = cache.mkdir("soak")
    voice = hashlib.sha1(espeak_version().encode()).hexdigest()[:8]
    key = f"{SECONDS:.0f}s-seed{SEED}-espeak-{voice}"
    wav, count = folder / f"{key}.wav", folder / f"{key}.wake-phrases"
    if not (wav.exists() and count.exists()):
        mix = build_mix(SECONDS, SEED, cache_dir=folder / "espeak")
        soundfile.write(wav, mix.audio, SAMPLE_RATE, subtype="PCM_16")
        count.write_text(str(mix.wake_phrases), encoding="utf-8")
    return wav, int(count.read_text(encoding="utf-8"))


def test_minutes_of_the_soak_mix_keep_the_request_contract(
    tmp_path: Path, tiny_sd_model: Path, soak_wav: tuple[Path, int]
) -> None:
    wav, wake_phrases = soak_wav
    gallery = tmp_path / "gallery"
    run = run_daemon(wav, write_config(tmp_path, tiny_sd_model, gallery), tmp_path, 300)
    assert run.returncode == 0, run.stderr[-4000:]

    contract = check_contract(run.events, gallery)
    assert contract.problems == ()
    assert contract.requests >= 0.8 * wake_phrases  # the mix did reach the daemon
    for outcome in ("image", "toxic", "empty"):  # every kind of ending was exercised
        assert contract.outcomes[outcome] >= 1, contract.outcomes
    audio_s = soundfile.info(wav).duration
    working = [s.rss_mb for s in run.samples if s.audio_t > 0 and not s.stopped]
    judged = memory(run.samples, warm_up_end(run.events, audio_s))
    print(
        f"\nsoak (short): {audio_s:.0f} s of audio, {contract.requests} requests "
        f"{dict(contract.outcomes)}, {run.wall_s:.0f} s wall; resident memory while "
        f"listening {working[0]:.0f} MB, at the end {working[-1]:.0f} MB, peak "
        f"{max(working):.0f} MB ({len(working)} samples; too few to judge growth)"
        if judged is None
        else f"\nsoak (short): after warm-up {judged}"
    )
