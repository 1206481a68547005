"""Where and how an image is computed: device, precision, seed, weight variant, OOM recovery.

Pure decisions, so they are tested without a GPU: :func:`pick_device`,
:func:`choose_seed`, :func:`choose_variant`, :func:`is_out_of_memory`,
:func:`run_with_oom_retry` and :func:`finite_picture`.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..config import ImageConfig
from ..model_files import ModelError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
HALF = ("float16", "bfloat16")
OOM_ADVICE = (
    "out of GPU memory twice; lower [image] width/height, or set "
    "attention_slicing, vae_tiling or cpu_offload"
)
# How a failed GPU allocation reads when it arrives as a plain RuntimeError (matched
# as substrings of str(exc), case as printed). Where each comes from:
OOM_MARKERS = (
    # PyTorch's caching allocator (c10/cuda/CUDACachingAllocator.cpp), "CUDA out of
    # memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of ..."; usually
    # a torch.OutOfMemoryError, but wrappers that re-raise keep only the text.
    "CUDA out of memory",
    # The same allocator in ROCm builds: "torch.OutOfMemoryError: HIP out of memory.
    # Tried to allocate 4.50 GiB" (pytorch/pytorch#138002, ROCm/TheRock#1054).
    "HIP out of memory",
    # C10_CUDA_CHECK on cudaErrorMemoryAllocation (c10/cuda/CUDAException.cpp: "CUDA
    # error: " + cudaGetErrorString), raised as torch.AcceleratorError, a RuntimeError:
    # "CUDA error: out of memory" (lllyasviel/stable-diffusion-webui-forge#2524,
    # deepbeepmeep/Wan2GP#1083). ROCm builds print "HIP error: " there
    # (huggingface/autotrain-advanced#737) and hipGetErrorString(hipErrorOutOfMemory)
    # is "out of memory"; that combination is composed, not seen in a report.
    "CUDA error: out of memory",
    "HIP error: out of memory",
    # TORCH_CUDABLAS_CHECK (aten/src/ATen/cuda/Exceptions.h) when cuBLAS cannot allocate
    # its handle or workspace: "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling
    # `cublasCreate(handle)`" (QwenLM/Qwen3#873, DeepMotionAIResearch/
    # DenseMatchingBenchmark#20); on ROCm "CUDA error: HIPBLAS_STATUS_ALLOC_FAILED when
    # calling `hipblasCreate(handle)`" (ROCm/TheRock#1708).
    "CUBLAS_STATUS_ALLOC_FAILED",
    "HIPBLAS_STATUS_ALLOC_FAILED",
    # AT_CUDNN_CHECK (aten/src/ATen/cuda/Exceptions.h: "cuDNN error: " +
    # cudnnGetErrorString): "cuDNN error: CUDNN_STATUS_ALLOC_FAILED" up to cuDNN 8
    # (KupynOrest/DeblurGAN#128, pytorch/pytorch#20123); cuDNN 9, which current torch
    # wheels ship, names it CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED
    # (status 4004 in cuDNN 9's cudnnStatus_t).
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
)


class GenerationError(Exception):
    """One image failed; the daemon reports it as an error event and keeps running."""


class NonFinitePixelsError(GenerationError):
    """The model drew NaN or infinite pixels: there is no picture to keep."""


def finite_picture(pixels: np.ndarray, advice: str) -> Image.Image:
    """diffusers' float pixels (0..1, ``output_type="np"``) as an 8-bit RGB picture.

    NaN in the latents (half precision overflowing in a VAE, damaged weights) spreads
    through the decoder; diffusers' own cast to 8 bits turns it into 0, and the result
    is a black square saved as if it were a picture. Here it is a
    :class:`NonFinitePixelsError` carrying ``advice``, so the request ends as an error that
    says what to change. The cast is diffusers' ``numpy_to_pil``, so a finite image
    has the same pixels either way.
    """
    import numpy as np
    from PIL import Image

    if not np.isfinite(pixels).all():
        raise NonFinitePixelsError(advice)
    return Image.fromarray((pixels * 255).round().astype(np.uint8)).convert("RGB")


def non_finite_advice(model: str, dtype_name: str, source: str) -> str:
    """What to do when ``model`` drew NaN pixels in ``dtype_name``."""
    said = f"the image model {model!r} drew NaN pixels ({dtype_name}), not a picture"
    if dtype_name in HALF:
        return (
            f'{said}: half precision overflowed, as some VAEs do; set [image] dtype = "float32"'
            f" in {source}, or use a model whose VAE is made for {dtype_name}"
        )
    return (
        f"{said}: its weights may be damaged; pull it again (speech2image models pull image)"
        f" or check [image] model in {source}"
    )


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


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the GPU failing to allocate memory, whatever type carries it.

    The caching allocator raises ``torch.OutOfMemoryError``, but an allocation that
    fails inside cuBLAS, cuDNN or a plain CUDA runtime call reaches Python as a
    ``RuntimeError`` (``torch.AcceleratorError`` on recent torch) that only names the
    failure in its text; those deserve the same free-and-retry. Only ``RuntimeError``
    texts are read: torch raises every C++ failure as one, and another type quoting
    such a text (a config message, say) is not an allocation failure.
    """
    loaded = sys.modules.get("torch")  # not imported: the error cannot be torch's
    cuda = getattr(loaded, "cuda", None)
    oom = getattr(loaded, "OutOfMemoryError", None) or getattr(cuda, "OutOfMemoryError", None)
    if isinstance(oom, type) and isinstance(exc, oom):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc)
    return any(marker in text for marker in OOM_MARKERS)


def run_with_oom_retry(
    fn: Callable[[], T], free: Callable[[], None], oom: type[BaseException] | None = None
) -> T:
    """Run ``fn``; on out-of-memory free what can be freed and try once more.

    A first OOM is often fragmentation or a leftover from the previous image; a
    second means this request does not fit. Every failure becomes a
    :class:`GenerationError` with the original message, so the caller handles one type.
    ``oom`` is one more exception type to treat as out of memory (tests use a stand-in).

    ``free`` runs only after the first failure's ``except`` block has ended: until then
    the exception's traceback holds every frame of the failed call, and with them the
    tensors they allocated, so emptying the CUDA cache there could not give them back.
    """
    try:
        return fn()
    except Exception as exc:
        if not _counts_as_oom(exc, oom):
            raise GenerationError(f"image generation failed: {exc}") from exc
        # Nothing else is kept: Python unbinds ``exc`` here, which drops the traceback.
    log.warning("out of GPU memory; freeing cached memory and retrying once")
    try:
        free()
    except Exception as exc:
        raise GenerationError(f"image generation failed: {exc}") from exc
    try:
        return fn()
    except Exception as exc:
        if _counts_as_oom(exc, oom):
            raise GenerationError(OOM_ADVICE) from exc
        raise GenerationError(f"image generation failed: {exc}") from exc


def _counts_as_oom(exc: BaseException, extra: type[BaseException] | None) -> bool:
    return is_out_of_memory(exc) or (extra is not None and isinstance(exc, extra))
