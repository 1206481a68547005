"""Generator: a diffusers text-to-image pipeline, loaded once, never online.

The model is ``[image] model``: a local diffusers folder or a Hugging Face id that
``speech2image models pull`` has put in the local cache. Loading never reaches the
network (``local_files_only`` everywhere); a model that is not there is a
:class:`ModelError` naming the key, the cache it looked in and the fix.

The safety checker is always off: moderation judges the prompt before it gets here,
and the checker costs a second model's memory and blacks out images without saying why.

The decisions that need no GPU to test are pure functions: :func:`pick_device`,
:func:`choose_seed`, :func:`choose_variant` and :func:`run_with_oom_retry`.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import os
import secrets
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import ImageConfig
from .models import PULL_HINT, ModelError

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

T = TypeVar("T")
HALF = ("float16", "bfloat16")
WARM_UP_SIZE = 64  # the smallest [image] width/height; a multiple of every SD VAE's factor 8
# The files of a diffusers pipeline; single-file checkpoints at the top level are not needed.
PULL_PATTERNS = ["model_index.json", "*/config.json", "*/*.json", "*/*.txt"]
SCHEDULER_EXAMPLES = "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DDIMScheduler, \
DPMSolverMultistepScheduler, LCMScheduler"


class GenerationError(Exception):
    """One image failed; the daemon reports it as an error event and keeps running."""


@dataclass(frozen=True)
class GeneratedImage:
    """An image and everything needed to make it again (the gallery embeds this)."""

    image: Image.Image
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    sampler: str  # the scheduler class name
    model: str
    seconds: float  # inside the diffusers call
    negative_prompt: str
    device: str
    dtype: str


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


def hf_cache() -> Path:
    """The Hugging Face hub cache, read at call time (tests point it elsewhere)."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_image_model(config: ImageConfig, source: str) -> Path:
    """A local pipeline folder for ``[image] model``; never downloads."""
    where = f"([image] model in {source})"
    folder = Path(config.model).expanduser()
    if not folder.is_dir():
        if config.model.startswith(("/", ".", "~")) or config.model.count("/") > 1:
            raise ModelError(f"image model folder {folder} {where} not found")
        from huggingface_hub import snapshot_download

        cache = hf_cache()
        try:
            folder = Path(
                str(snapshot_download(config.model, cache_dir=cache, local_files_only=True))
            )
        except Exception as exc:  # huggingface_hub raises several types for "not cached"
            raise ModelError(
                f"image model {config.model!r} {where} is not in the local Hugging Face "
                f"cache ({cache}); {PULL_HINT}"
            ) from exc
    if not (folder / "model_index.json").is_file():
        raise ModelError(
            f"image model {config.model!r} {where}: {folder} has no model_index.json; it must "
            "be a diffusers pipeline folder (`speech2image models pull` fetches one by its id)"
        )
    return folder


def _weight_files(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("*/*.safetensors")]


class Generator:
    """A text-to-image pipeline on one device; ``generate`` is called from one thread."""

    def __init__(self, config: ImageConfig, source: str) -> None:
        import torch

        self.config = config
        started = time.monotonic()
        # 1. Find the files; decide device, precision, weight variant and scheduler.
        folder = resolve_image_model(config, source)
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.device, self.dtype = pick_device(config, cuda, bf16)
        variant = choose_variant(_weight_files(folder), self.dtype_name in HALF)
        scheduler = _scheduler_class(config.scheduler, source)
        # 2. Load, without the safety checker (moderation judged the prompt already).
        self.pipe: Any = _load_pipeline(folder, self.dtype, variant)
        # 3. Scheduler (configured from the model's own) and the memory/speed options.
        if scheduler is not None:
            self.pipe.scheduler = scheduler.from_config(self.pipe.scheduler.config)
        _apply_options(self.pipe, config, self.device, source)
        self.sampler = type(self.pipe.scheduler).__name__
        took, what = time.monotonic() - started, f"{self.device}, {self.dtype_name}"
        log.info("image model %s loaded (%s, %s) in %.1f s", config.model, what, self.sampler, took)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def warm_up(self) -> None:
        """One tiny generation, so the daemon says it is ready only when it is.

        The first call pays for lazy set-up (kernels, allocator, cuDNN choices). With
        ``compile`` the warm-up uses the real size: compiling happens now, not on
        the first request, and a different shape would compile a second time.
        """
        size = (self.config.width, self.config.height) if self.config.compile else None
        started = time.monotonic()
        self._run("warm-up", seed=0, steps=1, size=size)
        log.info("image model warm in %.1f s", time.monotonic() - started)

    def generate(self, prompt: str, seed: int | None = None) -> GeneratedImage:
        """One image for ``prompt``; ``seed`` overrides ``[image] seed``."""
        config = self.config
        used = choose_seed(config.seed) if seed is None else seed
        image, seconds = self._run(prompt, used, config.steps, (config.width, config.height))
        return GeneratedImage(
            image=image, seed=used, steps=config.steps, guidance=config.guidance,
            width=image.width, height=image.height, sampler=self.sampler, model=config.model,
            seconds=seconds, negative_prompt=config.negative_prompt, device=self.device,
            dtype=self.dtype_name,
        )  # fmt: skip

    def _run(
        self, prompt: str, seed: int, steps: int, size: tuple[int, int] | None
    ) -> tuple[Image.Image, float]:
        import torch

        width, height = size or (WARM_UP_SIZE, WARM_UP_SIZE)
        config = self.config

        def call() -> tuple[Image.Image, float]:
            generator = torch.Generator(self.device).manual_seed(seed)
            started = time.perf_counter()
            with torch.inference_mode():
                result = self.pipe(
                    prompt, negative_prompt=config.negative_prompt or None,
                    num_inference_steps=steps, guidance_scale=config.guidance,
                    width=width, height=height, generator=generator, output_type="pil",
                )  # fmt: skip
            image: Image.Image = result.images[0].convert("RGB")
            return image, time.perf_counter() - started

        return run_with_oom_retry(call, self._free)

    def _free(self) -> None:
        """What an OOM retry can give back: garbage and the CUDA allocator's cache."""
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def _load_pipeline(folder: Path, dtype: torch.dtype, variant: str | None) -> Any:
    """The pipeline class named in model_index.json, with local files only."""
    # Image processors are never used here: transformers' advice to install torchvision
    # for them would replace the CPU torch with a CUDA build; it is not worth a warning.
    logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (diffusers_logging, transformers_logging):  # logs, not bars, in a daemon
        typing.cast(Any, library).disable_progress_bar()
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    extra: dict[str, Any] = {}
    if "safety_checker" in index:
        extra = {"safety_checker": None, "requires_safety_checker": False}
    if importlib.util.find_spec("accelerate") is None:
        extra["low_cpu_mem_usage"] = False  # what diffusers falls back to, minus its warning
    auto: Any = AutoPipelineForText2Image  # its from_pretrained is untyped
    pipe = auto.from_pretrained(
        folder, local_files_only=True, dtype=dtype, variant=variant, **extra
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _scheduler_class(name: str, source: str) -> Any:
    """``[image] scheduler`` as a diffusers class, checked before minutes of loading."""
    if not name:
        return None
    import diffusers

    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and name.endswith("Scheduler") and hasattr(cls, "from_config")):
        raise ModelError(
            f"[image] scheduler = {name!r} in {source} is not a diffusers scheduler; "
            f'for example: {SCHEDULER_EXAMPLES} (or "" for the model\'s own)'
        )
    return cls


def _apply_options(pipe: Any, config: ImageConfig, device: str, source: str) -> None:
    """The ``[image]`` memory and speed switches, then the move onto ``device``."""
    import torch

    if config.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.attention_slicing:
        pipe.enable_attention_slicing()
    if config.vae_tiling:
        pipe.vae.enable_tiling()
    if config.cpu_offload and device == "cuda":
        if importlib.util.find_spec("accelerate") is None:
            raise ModelError(
                f"[image] cpu_offload in {source} needs the accelerate package: "
                ".venv/bin/pip install accelerate (or set cpu_offload = false)"
            )
        pipe.enable_model_cpu_offload()  # moves each part to the GPU only while it runs
    else:
        if config.cpu_offload:
            log.warning("[image] cpu_offload does nothing on the CPU; ignored")
        pipe.to(device)
    if config.compile:
        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=False)


def pull_image_model(config: ImageConfig, say: Callable[[str], None]) -> None:
    """The only place an image model is downloaded: diffusers files, not checkpoints.

    Half-precision weights (``fp16`` variant, half the download) when this machine
    would run in half precision and the repository has them; full ones otherwise.
    """
    if Path(config.model).expanduser().is_dir():
        say(f"image model: using the folder {config.model} as is")
        return
    cache = hf_cache()
    say(f"image model: downloading {config.model} into {cache}")
    try:
        folder = _download(config.model, cache, _pull_dtype_is_half(config))
    except Exception as exc:  # network and hub errors come in many types
        raise ModelError(f"could not download image model {config.model!r}: {exc}") from exc
    if not (folder / "model_index.json").is_file() or not _weight_files(folder):
        raise ModelError(
            f"{config.model!r} is not a diffusers pipeline (no model_index.json or "
            "safetensors weights); [image] model needs one"
        )
    say(f"image model: {config.model} ready in {folder}")


def _download(repo_id: str, cache: Path, half: bool) -> Path:
    """snapshot_download of the pipeline files (its progress bars go to stderr)."""
    from huggingface_hub import snapshot_download

    attempts: list[tuple[str, list[str] | None]] = [("*/*.fp16.safetensors", None)] if half else []
    attempts.append(("*/*.safetensors", ["*.fp16.*"]))  # also when a repo has no fp16 variant
    for weights, ignore in attempts:
        folder = Path(
            str(snapshot_download(
                repo_id, cache_dir=cache, allow_patterns=[*PULL_PATTERNS, weights],
                ignore_patterns=ignore,
            ))
        )  # fmt: skip
        if _weight_files(folder):
            break
    return folder


def _pull_dtype_is_half(config: ImageConfig) -> bool:
    """What :func:`pick_device` would choose here, without its warnings."""
    import torch

    if config.device == "cpu" or not torch.cuda.is_available():
        return False
    return config.dtype in ("auto", *HALF)
