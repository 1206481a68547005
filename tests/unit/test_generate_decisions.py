"""The image stage's decisions that need no GPU and no model: device, seed, variant, OOM."""

from __future__ import annotations

import gc
import logging
import sys
import types
import weakref

import numpy as np
import pytest
import torch

from speech2image.config import ImageConfig
from speech2image.images.runtime import (
    GenerationError,
    NonFinitePixelsError,
    choose_seed,
    choose_variant,
    finite_picture,
    is_out_of_memory,
    non_finite_advice,
    pick_device,
    run_with_oom_retry,
)
from speech2image.model_files import ModelError


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "bf16", "expected"),
    [
        ("auto", "auto", True, True, ("cuda", torch.float16)),
        ("auto", "auto", False, False, ("cpu", torch.float32)),
        ("auto", "bfloat16", True, True, ("cuda", torch.bfloat16)),
        ("auto", "float32", True, True, ("cuda", torch.float32)),
        ("auto", "float16", False, False, ("cpu", torch.float32)),  # downgraded, with a warning
        ("auto", "bfloat16", False, False, ("cpu", torch.bfloat16)),
        ("cpu", "auto", True, True, ("cpu", torch.float32)),
        ("cpu", "bfloat16", True, True, ("cpu", torch.bfloat16)),
        ("cuda", "auto", True, False, ("cuda", torch.float16)),
        ("cuda", "float32", True, False, ("cuda", torch.float32)),
    ],
)
def test_pick_device_matrix(
    device: str, dtype: str, cuda: bool, bf16: bool, expected: tuple[str, torch.dtype]
) -> None:
    assert pick_device(ImageConfig(device=device, dtype=dtype), cuda, bf16) == expected


def test_cpu_warns_that_it_is_slow(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="speech2image.images.runtime"):
        pick_device(ImageConfig(), cuda_available=False, bf16_supported=False)
    assert "CPU" in caplog.text
    assert "minutes per image" in caplog.text


def test_float16_on_auto_cpu_is_downgraded_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="speech2image.images.runtime"):
        _, dtype = pick_device(ImageConfig(dtype="float16"), False, False)
    assert dtype == torch.float32
    assert "float16 becomes float32" in caplog.text


@pytest.mark.parametrize(
    ("device", "dtype", "cuda", "bf16", "message"),
    [
        ("cpu", "float16", True, True, "[image] dtype = 'float16' does not run on the CPU"),
        ("cuda", "auto", False, False, "[image] device = 'cuda' but torch sees no CUDA GPU"),
        ("cuda", "bfloat16", True, False, "'bfloat16' is not supported by this GPU"),
        ("auto", "bfloat16", True, False, "'bfloat16' is not supported by this GPU"),
    ],
)
def test_pick_device_refuses_contradictions(
    device: str, dtype: str, cuda: bool, bf16: bool, message: str
) -> None:
    with pytest.raises(ModelError) as caught:
        pick_device(ImageConfig(device=device, dtype=dtype), cuda, bf16)
    assert message in str(caught.value)


def test_fixed_seed_is_used_as_is() -> None:
    assert choose_seed(1234, draw=lambda: 99) == 1234
    assert choose_seed(0, draw=lambda: 99) == 0


def test_seed_minus_one_draws_a_fresh_seed_per_image() -> None:
    draws = iter([7, 8])
    assert choose_seed(-1, draw=lambda: next(draws)) == 7
    assert choose_seed(-1, draw=lambda: next(draws)) == 8
    seeds = {choose_seed(-1) for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.parametrize(
    ("files", "half", "expected"),
    [
        (["model.safetensors", "diffusion_pytorch_model.safetensors"], True, None),
        (["model.fp16.safetensors", "diffusion_pytorch_model.fp16.safetensors"], False, "fp16"),
        (["model.safetensors", "model.fp16.safetensors"], True, "fp16"),
        (["model.safetensors", "model.fp16.safetensors"], False, None),
        ([], True, None),
    ],
)
def test_weight_variant(files: list[str], half: bool, expected: str | None) -> None:
    assert choose_variant(files, half) == expected


class FakeOOMError(Exception):
    """Stands in for torch.cuda.OutOfMemoryError, which needs a GPU to happen."""


class Flaky:
    """Raises ``failures`` OOMs, then returns "image"; counts calls and frees."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.frees = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise FakeOOMError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "image"

    def free(self) -> None:
        self.frees += 1


def test_no_oom_runs_once_and_frees_nothing() -> None:
    flaky = Flaky(0)
    assert run_with_oom_retry(flaky, flaky.free, oom=FakeOOMError) == "image"
    assert (flaky.calls, flaky.frees) == (1, 0)


def test_one_oom_frees_memory_and_retries() -> None:
    flaky = Flaky(1)
    assert run_with_oom_retry(flaky, flaky.free, oom=FakeOOMError) == "image"
    assert (flaky.calls, flaky.frees) == (2, 1)


def test_two_ooms_give_a_generation_error_saying_what_to_change() -> None:
    flaky = Flaky(2)
    with pytest.raises(GenerationError, match="out of GPU memory twice") as caught:
        run_with_oom_retry(flaky, flaky.free, oom=FakeOOMError)
    assert "attention_slicing" in str(caught.value)
    assert isinstance(caught.value.__cause__, FakeOOMError)
    assert (flaky.calls, flaky.frees) == (2, 1)


def test_other_errors_become_generation_errors_without_retry() -> None:
    calls = []

    def broken() -> str:
        calls.append(1)
        raise ValueError("height must be divisible by 8")

    with pytest.raises(GenerationError, match="height must be divisible by 8"):
        run_with_oom_retry(broken, lambda: None, oom=FakeOOMError)
    assert len(calls) == 1


def test_default_oom_type_is_torch_cuda_out_of_memory() -> None:
    """Without a GPU the real type can still be raised: it is an ordinary exception class."""
    flaky_calls = []

    def once() -> str:
        flaky_calls.append(1)
        if len(flaky_calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "image"

    assert run_with_oom_retry(once, lambda: None) == "image"
    assert len(flaky_calls) == 2


# How GPU allocation failures really read (sources in runtime.OOM_MARKERS).
REAL_OOM_ERRORS = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"),
    RuntimeError(
        "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported "
        "at some other API call, so the stacktrace below might be incorrect."
    ),
    torch.AcceleratorError("CUDA error: out of memory"),
    RuntimeError(
        "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity; "
        "6.81 GiB already allocated)"
    ),
    RuntimeError(
        "HIP out of memory. Tried to allocate 4.50 GiB. GPU 0 has a total capacity of "
        "15.98 GiB of which 1.40 GiB is free."
    ),
    RuntimeError("HIP error: out of memory"),
    RuntimeError("CUDA error: HIPBLAS_STATUS_ALLOC_FAILED when calling `hipblasCreate(handle)`"),
]
NOT_MEMORY_ERRORS = [
    RuntimeError("expected scalar type Half but found Float"),
    RuntimeError("CUDA error: device-side assert triggered"),
    RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm(...)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
    ValueError("CUDA out of memory"),  # not what torch raises: a message quoting one
    MemoryError(),  # the CPU's memory, which emptying the CUDA cache does not help
]


def kind(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:40]}"


def fresh(error: BaseException) -> BaseException:
    """A new instance to raise, so no traceback is shared between tests."""
    return type(error)(*error.args)


@pytest.mark.parametrize("error", REAL_OOM_ERRORS, ids=kind)
def test_real_oom_errors_are_recognised(error: BaseException) -> None:
    assert is_out_of_memory(error)


@pytest.mark.parametrize("error", NOT_MEMORY_ERRORS, ids=kind)
def test_other_errors_are_not_out_of_memory(error: BaseException) -> None:
    assert not is_out_of_memory(error)


def test_oom_by_text_when_torch_lacks_the_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old or stubbed torch without OutOfMemoryError: the texts still count."""
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Half but found Float"))


class FailsOnce:
    """Raises ``error`` on the first call, then returns "image"; counts calls and frees."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0
        self.frees = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return "image"

    def free(self) -> None:
        self.frees += 1


@pytest.mark.parametrize("error", REAL_OOM_ERRORS, ids=kind)
def test_every_real_oom_is_freed_and_retried_once(error: BaseException) -> None:
    flaky = FailsOnce(fresh(error))
    assert run_with_oom_retry(flaky, flaky.free) == "image"
    assert (flaky.calls, flaky.frees) == (2, 1)


@pytest.mark.parametrize("error", REAL_OOM_ERRORS, ids=kind)
def test_a_real_oom_twice_gives_the_advice(error: BaseException) -> None:
    raised: list[BaseException] = []

    def always() -> str:
        raised.append(fresh(error))
        raise raised[-1]

    with pytest.raises(GenerationError, match="out of GPU memory twice") as caught:
        run_with_oom_retry(always, lambda: None)
    assert "attention_slicing" in str(caught.value)
    assert len(raised) == 2
    assert caught.value.__cause__ is raised[1]


def test_a_runtime_error_not_about_memory_is_not_retried() -> None:
    flaky = FailsOnce(RuntimeError("expected scalar type Half but found Float"))
    with pytest.raises(GenerationError) as caught:
        run_with_oom_retry(flaky, flaky.free)
    assert str(caught.value) == (
        "image generation failed: expected scalar type Half but found Float"
    )
    assert (flaky.calls, flaky.frees) == (1, 0)


def test_a_different_error_on_the_retry_is_reported_as_itself() -> None:
    errors = iter([torch.OutOfMemoryError("CUDA out of memory"), ValueError("bad latents")])

    def failing() -> str:
        raise next(errors)

    with pytest.raises(GenerationError, match="image generation failed: bad latents"):
        run_with_oom_retry(failing, lambda: None)


def test_a_failing_free_is_a_generation_error() -> None:
    flaky = FailsOnce(torch.OutOfMemoryError("CUDA out of memory"))

    def broken_free() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(GenerationError, match="image generation failed: CUDA error: an illegal"):
        run_with_oom_retry(flaky, broken_free)
    assert flaky.calls == 1


class Activations:
    """Stands in for the tensors a failed diffusion step allocated."""


def test_memory_is_freed_after_the_failed_call_frames_are_gone() -> None:
    """``free`` must run when nothing holds the failed call's tensors any more.

    Inside the ``except`` block the exception's traceback still references the failed
    frames and their locals, so ``torch.cuda.empty_cache()`` there frees nothing.
    """
    held: list[weakref.ref[Activations]] = []
    dead_when_freed: list[bool] = []

    def step() -> str:
        if held:
            return "image"
        activations = Activations()  # a local of the failing frame, as tensors are
        held.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def free() -> None:
        gc.collect()
        dead_when_freed.append(held[0]() is None)

    assert run_with_oom_retry(step, free) == "image"
    assert dead_when_freed == [True], "free() ran while the failed frames were still alive"


def test_finite_pixels_become_8_bit_rgb_rounded() -> None:
    pixels = np.array([[[0.0, 0.5, 1.0], [0.25, 0.999, 0.001]]], dtype=np.float32)
    picture = finite_picture(pixels, "unused")
    assert (picture.mode, picture.size) == ("RGB", (2, 1))
    assert np.asarray(picture).tolist() == [[[0, 128, 255], [64, 255, 0]]]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_pixel_is_no_picture(bad: float) -> None:
    pixels = np.full((4, 4, 3), 0.5, dtype=np.float32)
    pixels[3, 2, 1] = bad
    with pytest.raises(NonFinitePixelsError, match="the advice") as caught:
        finite_picture(pixels, "the advice")
    assert isinstance(caught.value, GenerationError)  # the request ends as an error


def test_nan_advice_in_half_precision_is_float32() -> None:
    advice = non_finite_advice("stabilityai/sd-turbo", "float16", "~/.config/s2i.toml")
    assert "'stabilityai/sd-turbo' drew NaN pixels (float16)" in advice
    assert '[image] dtype = "float32" in ~/.config/s2i.toml' in advice


def test_nan_advice_in_full_precision_is_the_weights() -> None:
    advice = non_finite_advice("/models/mine", "float32", "s2i.toml")
    assert "'/models/mine' drew NaN pixels (float32)" in advice
    assert "speech2image models pull image" in advice
    assert "[image] model in s2i.toml" in advice
    assert "dtype" not in advice
