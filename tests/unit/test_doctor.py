"""`speech2image doctor`'s decisions and wording: what counts as silence, a failure, a
warning; the report's lines, summary, JSON and exit status. No microphone, GPU or
user manager: the judgements are pure functions of what the checks measured."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from speech2image.doctor import (
    Levels,
    exit_status,
    format_check,
    judge_levels,
    levels_of,
    meter_bar,
    no_input,
    register,
    report_json,
    run_checks,
    summary_line,
)
from speech2image.doctor_checks import (
    GIB,
    Check,
    Gpu,
    check_config,
    components_without_weights,
    judge_gallery,
    judge_gpu,
    judge_unit,
    probe_create,
    probe_write,
    without_hint,
    worst,
)
from speech2image.model_files import PULL_HINT, ModelError
from speech2image.pcm import SAMPLE_RATE as SAMPLE
from tests.support import data_audio, noise, silence


def as_float(samples: np.ndarray) -> np.ndarray:
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def test_levels_of_speech_zeros_and_nothing() -> None:
    speech = levels_of(as_float(data_audio("jfk.flac")[: 2 * SAMPLE]), SAMPLE)
    assert -20 < speech.peak_dbfs <= 0
    assert speech.rms_dbfs < speech.peak_dbfs
    assert speech.seconds == pytest.approx(2.0)
    zeros = levels_of(as_float(silence(2.0)), SAMPLE)
    assert zeros.peak_dbfs == zeros.rms_dbfs == -math.inf
    assert levels_of(np.zeros(0, dtype=np.float32), SAMPLE).seconds == 0


def test_full_scale_is_zero_dbfs_and_half_is_minus_six() -> None:
    levels = levels_of(np.array([1.0, -0.5], dtype=np.float32), SAMPLE)
    assert levels.peak_dbfs == pytest.approx(0.0)
    assert levels_of(np.array([0.5], dtype=np.float32), SAMPLE).peak_dbfs == pytest.approx(
        -6.02, abs=0.01
    )


def test_speech_is_ok_with_its_levels() -> None:
    check = judge_levels("#0 pulse", levels_of(as_float(data_audio("jfk.flac")), SAMPLE), 2.0)
    assert check.status == "ok"
    assert check.summary.startswith("#0 pulse: peak ")
    assert "dBFS" in check.summary


def test_digital_silence_and_a_whisper_of_noise_warn_muted() -> None:
    zeros = judge_levels("#0 pulse", levels_of(as_float(silence(2.0)), SAMPLE), 2.0)
    assert zeros.status == "warn"
    assert "every sample zero" in zeros.summary
    assert "is the microphone muted?" in zeros.summary
    faint = judge_levels("#0 pulse", levels_of(as_float(noise(2.0, level=0.0001)), SAMPLE), 2.0)
    assert faint.status == "warn"
    assert "nearly silent" in faint.summary
    assert faint.fix


def test_a_quiet_room_is_not_silence() -> None:
    room = judge_levels("#0 pulse", levels_of(as_float(noise(2.0, level=0.003)), SAMPLE), 2.0)
    assert room.status == "ok"


def test_no_audio_at_all_fails() -> None:
    check = judge_levels("#3 USB", Levels(-math.inf, -math.inf, 0.0), 2.0)
    assert check.status == "fail"
    assert check.summary == "#3 USB opened but delivered no audio in 2.0 s"


def test_a_missing_input_lists_the_ones_there_or_says_to_plug_one_in() -> None:
    listed = no_input("[audio] device = 'USB' matches no input device", ["#0 pulse", "#1 default"])
    assert listed.status == "fail"
    assert "#0 pulse; #1 default" in listed.fix
    assert "[audio] device" in listed.fix
    none = no_input("no audio input devices found", [])
    assert "plug a microphone in" in none.fix
    assert "speech2image devices" in none.fix


def test_the_meter_bar_runs_from_minus_sixty_to_full_scale() -> None:
    assert meter_bar(-math.inf, width=10) == "[          ]   -inf dBFS"
    assert meter_bar(-90.0, width=10).startswith("[          ]")
    assert meter_bar(-30.0, width=10).startswith("[=====     ]")
    assert meter_bar(0.0, width=10) == "[==========]    0.0 dBFS"


def test_a_failure_prints_its_fix_under_it_and_ok_prints_none() -> None:
    failed = format_check(Check("wake", "fail", "no hey_jarvis", "speech2image models pull wake"))
    first, second = failed.split("\n")
    assert first.split() == ["FAIL", "wake", "no", "hey_jarvis"]
    assert second.strip() == "fix: speech2image models pull wake"
    assert second.index("fix:") == first.index("no hey_jarvis")  # under the summary
    assert format_check(Check("config", "ok", "/etc/x.toml", "unused")) == (
        f"  ok    {'config':<14} /etc/x.toml"
    )
    info = format_check(Check("service", "info", "not installed", "speech2image service install"))
    assert "hint: speech2image service install" in info


def test_only_a_failure_fails_the_run() -> None:
    fine = [Check("a", "ok", ""), Check("b", "warn", ""), Check("c", "info", "")]
    assert exit_status(fine) == 0
    assert exit_status([*fine, Check("d", "fail", "")]) == 1
    assert worst(["ok", "warn", "info"]) == "warn"
    assert worst(["ok", "fail", "warn"]) == "fail"
    assert worst(["ok"]) == "ok"


def test_the_summary_counts_and_says_what_next() -> None:
    checks = [Check("a", "ok", ""), Check("b", "warn", ""), Check("c", "warn", "")]
    assert summary_line(checks) == "1 ok, 2 warnings: ready to `speech2image run`"
    assert summary_line(checks, complete=False).endswith("nothing required failed")
    failed = summary_line([*checks, Check("d", "fail", ""), Check("e", "info", "")])
    assert failed.startswith("1 ok, 2 warnings, 1 failed, 1 for information: fix the failures")


def test_json_report() -> None:
    report = report_json([Check("gpu", "warn", "CPU only", "get a GPU")])
    assert json.loads(json.dumps(report)) == {
        "ok": True,
        "checks": [{"name": "gpu", "status": "warn", "summary": "CPU only", "fix": "get a GPU"}],
    }
    assert report_json([Check("wake", "fail", "x")])["ok"] is False


def test_cpu_only_warns_unless_cuda_is_configured() -> None:
    cpu = judge_gpu("auto", "2.13.0+cpu", None)
    assert cpu.status == "warn"
    assert "CPU only: images will take minutes" in cpu.summary
    insisted = judge_gpu("cuda", "2.13.0+cpu", None)
    assert insisted.status == "fail"
    assert '[image] device = "cuda"' in insisted.summary
    assert '[image] device = "auto"' in insisted.fix


def test_a_gpu_names_itself_and_its_free_memory() -> None:
    h200 = Gpu("NVIDIA H200", 130 * GIB, 140 * GIB)
    ok = judge_gpu("auto", "2.13.0", h200)
    assert ok.status == "ok"
    assert ok.summary == "torch 2.13.0, CUDA on NVIDIA H200, 130.0 of 140.0 GiB free"
    full = judge_gpu("cuda", "2.13.0", Gpu("RTX 3060", GIB // 2, 12 * GIB))
    assert full.status == "warn"
    assert "cpu_offload" in full.fix
    assert judge_gpu("cpu", "2.13.0", h200).status == "info"


def test_gallery_judgements(tmp_path: Path) -> None:
    assert judge_gallery(tmp_path, True, None, 50 * GIB).status == "ok"
    assert "created at the first start" in judge_gallery(tmp_path, False, None, 50 * GIB).summary
    low = judge_gallery(tmp_path, True, None, GIB // 4)
    assert low.status == "warn"
    assert "0.2 GiB free" in low.summary
    denied = judge_gallery(tmp_path, True, "Read-only file system", 50 * GIB)
    assert denied.status == "fail"
    assert denied.summary == f"{tmp_path} is not writable (Read-only file system)"
    assert "[gallery] dir" in denied.fix


def test_the_gallery_probes_leave_nothing_behind(tmp_path: Path) -> None:
    assert probe_write(tmp_path) is None
    assert probe_create(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert probe_write(tmp_path / "absent") is not None


def test_unit_states() -> None:
    no_manager = judge_unit(None, "")
    assert no_manager.status == "info"
    assert "no systemd user manager" in no_manager.summary
    assert "speech2image service install" in no_manager.fix
    assert judge_unit(None, "enabled").summary.count("installed (enabled)") == 1
    assert judge_unit("inactive", "not-found").fix == "speech2image service install --enable --now"
    assert judge_unit("active", "enabled") == Check("service", "ok", "active (enabled)")
    failed = judge_unit("failed", "enabled")
    assert failed.status == "warn"
    assert "speech2image service logs" in failed.fix
    assert judge_unit("inactive", "disabled").status == "info"


def test_a_model_error_loses_only_the_generic_hint() -> None:
    error = ModelError(f"wake-word model 'hey_jarvis' not found at /x; {PULL_HINT}")
    assert without_hint(error) == "wake-word model 'hey_jarvis' not found at /x"


def test_a_pipeline_part_without_weights_is_named(tmp_path: Path) -> None:
    for part in ("unet", "vae", "text_encoder"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text("{}")
    (tmp_path / "scheduler").mkdir()  # no weights, and none needed
    (tmp_path / "scheduler" / "scheduler_config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (tmp_path / "text_encoder" / "pytorch_model.bin").write_bytes(b"x")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").symlink_to(tmp_path / "gone")
    assert components_without_weights(tmp_path) == ["vae"]  # a dangling hub-cache link


def test_a_broken_config_fails_and_the_rest_runs_on_defaults(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text('[gallery]\ndir = "x"\ntreshold = 0.6\n')
    check, config = check_config(str(broken))
    assert check.status == "fail"
    assert "treshold" in check.summary
    assert "built-in defaults" in check.summary
    assert config.gallery.dir == "outputs"
    checks = list(run_checks(str(broken), ["service"], 1.0, None))
    assert [c.name for c in checks] == ["config", "service"]
    assert exit_status(checks) == 1


def test_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["doctor", "--json", "--only", "gallery", "--only", "models"])
    assert args.only == ["gallery", "models"]
    assert args.seconds == 2.0
    assert args.json
    with pytest.raises(SystemExit):
        parser.parse_args(["doctor", "--seconds", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["doctor", "--only", "everything"])
