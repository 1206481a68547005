"""What a gallery image is called and what it says about itself.

Pure functions, no disk: the file name (date folder, time, prompt slug, seed) and
the ``parameters`` text AUTOMATIC1111 embeds in its PNGs, so that its tools and
others read ours.
"""

from __future__ import annotations

import datetime as dt
import io
import re
import unicodedata
from pathlib import Path
from typing import Any

from ..request import ImagePart

SLUG_MAX = 48
# diffusers scheduler classes under the sampler names AUTOMATIC1111 users know.
A1111_SAMPLERS = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PLMS",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}


def slugify(prompt: str, limit: int = SLUG_MAX) -> str:
    """A short, safe ASCII file-name form of the prompt ("Café au lait!" -> "cafe-au-lait")."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).split()
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > limit:
            break
        slug = candidate
    return slug or (words[0][:limit] if words else "image")


def a1111_parameters(prompt: str, recipe: ImagePart) -> str:
    """The ``parameters`` text AUTOMATIC1111 writes, so its tools and others read ours."""
    sampler = A1111_SAMPLERS.get(recipe.sampler, recipe.sampler)
    settings = (
        f"Steps: {recipe.steps}, Sampler: {sampler}, CFG scale: {recipe.guidance:g}, "
        f"Seed: {recipe.seed}, Size: {recipe.width}x{recipe.height}, Model: {recipe.model}"
    )
    prompt = " ".join(prompt.split())
    negative = " ".join(recipe.negative_prompt.split())
    return f"{prompt}\nNegative prompt: {negative}\n{settings}"


def image_name(when: dt.datetime, prompt: str, seed: int, attempt: int = 1) -> Path:
    """``YYYY-MM-DD/HHMMSS-<slug>-<seed>[-N].png``: sorts by time, says what it shows."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return Path(when.strftime("%Y-%m-%d")) / f"{when:%H%M%S}-{slugify(prompt)}-{seed}{suffix}.png"


def encode_png(image: Any, parameters: str) -> bytes:
    """The PNG bytes, with ``parameters`` as a text chunk, as AUTOMATIC1111 stores it."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
