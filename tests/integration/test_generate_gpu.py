"""The Generator on a real NVIDIA GPU: CUDA float16 by default, and out-of-memory recovery.

These are the only tests that may skip on a CPU machine (marker ``gpu``). They load
the tiny random Stable Diffusion pipeline (``tiny_sd_model``) with ``device`` and
``dtype`` left on ``auto``, as a user's config does, and check what a CPU cannot:
that the weights really are float16 on the GPU (a diffusers that ignored
``from_pretrained(dtype=...)`` would load float32 and still run), and that running
out of GPU memory is retried once, with the failed attempt's memory given back
first, reported as a GenerationError, and leaves the generator usable.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from speech2image.config import ImageConfig
from speech2image.images.generate import Generator
from speech2image.images.runtime import GenerationError

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs an NVIDIA GPU: torch.cuda.is_available() is False on this machine",
    ),
    # diffusers' schedulers call np.array() on tensors; numpy 2 deprecates how torch answers
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
SOURCE = "test.toml"
BALLAST = 256 * 2**20  # bytes a failing step holds, like the activations of a real one
COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def generator(tiny_sd_model: Path) -> Generator:
    config = ImageConfig(
        model=str(tiny_sd_model), device="auto", dtype="auto",
        width=64, height=64, steps=2, guidance=0.0,
    )  # fmt: skip
    loaded = Generator(config, SOURCE)
    loaded.warm_up()
    return loaded


def placement(module: torch.nn.Module) -> set[tuple[str, torch.dtype]]:
    """Every (device type, dtype) among a module's parameters."""
    return {(p.device.type, p.dtype) for p in module.parameters()}


def test_auto_means_cuda_float16(generator: Generator) -> None:
    assert (generator.device, generator.dtype_name) == ("cuda", "float16")
    assert placement(generator.pipe.unet) == {("cuda", torch.float16)}
    for name in COMPONENTS:  # from_pretrained(dtype=...) reaches every part
        assert placement(getattr(generator.pipe, name)) == {("cuda", torch.float16)}, name


def test_an_image_comes_out_of_the_gpu(generator: Generator) -> None:
    result = generator.generate("a red fox sleeping under a cherry tree", seed=42)
    assert (result.recipe.device, result.recipe.dtype) == ("cuda", "float16")
    assert result.image.size == (64, 64)
    assert result.image.mode == "RGB"
    assert np.asarray(result.image).std() > 0  # not black: float16 gave no NaNs


def more_than_the_gpu_holds(ballasts: list[weakref.ref[torch.Tensor]]) -> Callable[..., None]:
    """A UNet forward pre-hook that holds some memory, then asks for more than exists."""
    too_much = 2 * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory

    def hook(module: torch.nn.Module, args: Any) -> None:
        held = torch.empty(BALLAST, dtype=torch.uint8, device="cuda")
        ballasts.append(weakref.ref(held))
        torch.empty(too_much, dtype=torch.uint8, device="cuda")  # torch.OutOfMemoryError

    return hook


def test_out_of_memory_is_retried_once_then_reported_and_the_next_image_works(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator.generate("a red fox", seed=1)  # cuBLAS and cuDNN workspaces exist by now
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    ballasts: list[weakref.ref[torch.Tensor]] = []
    at_free: list[tuple[bool, int]] = []  # (first ballast gone, bytes allocated) after _free
    real_free = generator._free

    def watched_free() -> None:
        real_free()
        at_free.append((ballasts[0]() is None, torch.cuda.memory_allocated()))

    monkeypatch.setattr(generator, "_free", watched_free)
    hook = generator.pipe.unet.register_forward_pre_hook(more_than_the_gpu_holds(ballasts))
    try:
        with pytest.raises(GenerationError) as caught:
            generator.generate("a red fox", seed=2)
    finally:
        hook.remove()
    message = str(caught.value)
    from_oom = isinstance(caught.value.__cause__, torch.OutOfMemoryError)
    del caught  # its traceback holds the second attempt's frames and their memory
    assert message.startswith("out of GPU memory twice")
    assert from_oom
    assert len(ballasts) == 2  # the first attempt and one retry, no third
    assert len(at_free) == 1
    first_gone, allocated = at_free[0]
    assert first_gone, "_free ran while the failed attempt's tensors were still referenced"
    assert allocated < baseline + BALLAST // 2
    result = generator.generate("a red fox", seed=3)
    assert result.image.size == (64, 64)
    assert np.asarray(result.image).std() > 0
