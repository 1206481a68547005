"""Generator: a diffusers text-to-image pipeline, loaded once, never online.

The model is ``[image] model``: a local diffusers folder or a Hugging Face id that
``speech2image models pull`` has put in the local cache. Loading never reaches the
network (``local_files_only`` everywhere); a model that is not there is a
:class:`ModelError` naming the key, the cache it looked in and the fix.

The safety checker is always off: moderation judges the prompt before it gets here,
and the checker costs a second model's memory and blacks out images without saying why.

The decisions that need no GPU to test live in :mod:`.runtime`; where the files come
from, in :mod:`.pull`.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ImageConfig
from ..model_files import ModelError
from ..request import ImagePart
from .pull import resolve_image_model, weight_files
from .runtime import (
    HALF,
    NonFinitePixelsError,
    choose_seed,
    choose_variant,
    finite_picture,
    non_finite_advice,
    pick_device,
    run_with_oom_retry,
)

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

WARM_UP_SIZE = 64  # the smallest [image] width/height; a multiple of every SD VAE's factor 8
StepCallback = Callable[[int, int], None]  # (steps done, of how many), after each step
SCHEDULER_EXAMPLES = "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DDIMScheduler, \
DPMSolverMultistepScheduler, LCMScheduler"


@dataclass(frozen=True)
class GeneratedImage:
    """An image, how long it took, and its recipe: everything needed to make it again,
    in the form the request record (and so the gallery's sidecar) keeps it."""

    image: Image.Image
    seconds: float  # inside the diffusers call
    recipe: ImagePart


class Generator:
    """A text-to-image pipeline on one device; ``generate`` is called from one thread."""

    def __init__(self, config: ImageConfig, source: str) -> None:
        import torch

        self.config = config
        self.source = source
        started = time.monotonic()
        # 1. Find the files; decide device, precision, weight variant and scheduler.
        folder = resolve_image_model(config, source)
        cuda = torch.cuda.is_available()
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.device, self.dtype = pick_device(config, cuda, bf16)
        variant = choose_variant(weight_files(folder), self.dtype_name in HALF)
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
        A model that draws NaN already here is refused at start, with the fix.
        """
        size = (self.config.width, self.config.height) if self.config.compile else None
        started = time.monotonic()
        try:
            self._run("warm-up", seed=0, steps=1, size=size)
        except NonFinitePixelsError as exc:
            raise ModelError(str(exc)) from exc
        log.info("image model warm in %.1f s", time.monotonic() - started)

    def generate(
        self, prompt: str, seed: int | None = None, on_step: StepCallback | None = None
    ) -> GeneratedImage:
        """One image for ``prompt``; ``seed`` overrides ``[image] seed``; ``on_step`` is
        told each finished denoising step, ``(step, steps)``, counting from 1."""
        config = self.config
        used = choose_seed(config.seed) if seed is None else seed
        size = (config.width, config.height)
        image, seconds = self._run(prompt, used, config.steps, size, on_step)
        recipe = ImagePart(
            seed=used,
            steps=config.steps,
            guidance=config.guidance,
            width=image.width,
            height=image.height,
            sampler=self.sampler,
            model=config.model,
            negative_prompt=config.negative_prompt,
            device=self.device,
            dtype=self.dtype_name,
        )
        return GeneratedImage(image, seconds, recipe)

    def _run(
        self,
        prompt: str,
        seed: int,
        steps: int,
        size: tuple[int, int] | None,
        on_step: StepCallback | None = None,
    ) -> tuple[Image.Image, float]:
        import torch

        width, height = size or (WARM_UP_SIZE, WARM_UP_SIZE)
        config = self.config
        progress = (
            {} if on_step is None else {"callback_on_step_end": step_callback(on_step, steps)}
        )

        def call() -> tuple[np.ndarray, float]:
            generator = torch.Generator(self.device).manual_seed(seed)
            started = time.perf_counter()
            with torch.inference_mode():
                result = self.pipe(
                    prompt,
                    negative_prompt=config.negative_prompt or None,
                    num_inference_steps=steps,
                    guidance_scale=config.guidance,
                    width=width,
                    height=height,
                    generator=generator,
                    output_type="np",
                    **progress,
                )
            return result.images[0], time.perf_counter() - started

        pixels, seconds = run_with_oom_retry(call, self._free)
        advice = non_finite_advice(config.model, self.dtype_name, self.source)
        return finite_picture(pixels, advice), seconds

    def _free(self) -> None:
        """What an OOM retry can give back: garbage and the CUDA allocator's cache.

        ``run_with_oom_retry`` calls this only once the failed call's frames are gone,
        so the tensors they held are garbage by now; ``empty_cache`` then hands their
        blocks back to the driver, where cuBLAS and cuDNN, which allocate outside
        torch's cache, can use them too.
        """
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()


def step_callback(on_step: StepCallback, steps: int) -> Callable[..., dict[str, Any]]:
    """diffusers' ``callback_on_step_end``, telling ``on_step`` each finished step.

    The total is the pipeline's own count of timesteps when it has one (a second-order
    scheduler such as Heun's runs more than ``steps``), else ``steps``. A progress
    report is never worth the picture: whatever ``on_step`` raises is logged (DEBUG)
    and ignored, and the tensors pass through untouched.
    """

    def callback(
        pipe: Any, step_index: int, _timestep: Any, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            total = int(getattr(pipe, "num_timesteps", None) or steps)
            on_step(step_index + 1, total)
        except Exception:
            log.debug("a progress callback failed; ignored", exc_info=True)
        return kwargs

    return callback


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
