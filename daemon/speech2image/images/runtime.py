"""Where and how an image is computed: device, precision, seed, weight variant, OOM recovery.

Pure decisions, so they are tested without a GPU: :func:`pick_device`,
:func:`choose_seed`, :func:`choose_variant` and :func:`run_with_oom_retry`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..config import ImageConfig
from ..model_files import ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

T = TypeVar("T")
HALF = ("float16", "bfloat16")


class GenerationError(Exception):
    """One image failed; the daemon reports it as an error event and keeps running."""


def pick_device(
    config: ImageConfig, cuda_available: bool, bf16_supported: bool
) -> tuple[str, torch.dtype]:
    """Where and in what precision to run: ``auto`` = CUDA float16, else CPU float32.

    float16 on a CPU is slow or unsupported for many kernels. With ``device = "auto"``
    one config file may serve a desktop and a laptop, so it becomes float32 with a
    warning; with ``device = "cpu"`` it contradicts itself and is refused.
    """
    import torch

    device = config.device
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif device == "cuda" and not cuda_available:
        raise ModelError("[image] device = 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    name = config.dtype
    if name == "auto":
        name = "float16" if device == "cuda" else "float32"
    if device == "cpu" and name == "float16":
        if config.device == "cpu":
            raise ModelError(
                "[image] dtype = 'float16' does not run on the CPU ([image] device = 'cpu'); "
                "use float32 or bfloat16"
            )
        log.warning("no CUDA GPU: [image] dtype float16 becomes float32 on the CPU")
        name = "float32"
    if device == "cuda" and name == "bfloat16" and not bf16_supported:
        raise ModelError("[image] dtype = 'bfloat16' is not supported by this GPU; use float16")
    if device == "cpu":
        log.warning("image generation runs on the CPU (no CUDA GPU): expect minutes per image")
    dtype: torch.dtype = getattr(torch, name)
    return device, dtype


def choose_seed(configured: int, draw: Callable[[], int] | None = None) -> int:
    """``-1`` = a fresh seed per image (recorded, so any image can be made again)."""
    if configured >= 0:
        return configured
    return (draw or (lambda: secrets.randbits(32)))()


def choose_variant(weight_files: list[str], half: bool) -> str | None:
    """``"fp16"`` when that is what was pulled, or what is wanted and both are there."""
    variant = any(".fp16." in name for name in weight_files)
    full = any(".fp16." not in name for name in weight_files)
    return "fp16" if variant and (half or not full) else None


def run_with_oom_retry(
    fn: Callable[[], T], free: Callable[[], None], oom: type[BaseException] | None = None
) -> T:
    """Run ``fn``; on out-of-memory free what can be freed and try once more.

    A first OOM is often fragmentation or a leftover from the previous image; a
    second means this request does not fit. Every failure becomes a
    :class:`GenerationError` with the original message, so the caller handles one type.
    """
    if oom is None:
        import torch

        oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    oom_type: type[BaseException] = oom or RuntimeError
    try:
        try:
            return fn()
        except oom_type:
            log.warning("out of GPU memory; freeing cached memory and retrying once")
            free()
        try:
            return fn()
        except oom_type as exc:
            raise GenerationError(
                "out of GPU memory twice; lower [image] width/height, or set "
                "attention_slicing, vae_tiling or cpu_offload"
            ) from exc
    except GenerationError:
        raise
    except Exception as exc:
        raise GenerationError(f"image generation failed: {exc}") from exc
