"""Where an image model comes from: a local folder, or the Hugging Face cache that
``speech2image models pull`` fills. Loading never downloads; pulling is the only way in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import ImageConfig
from ..model_files import PULL_HINT, ModelError, hf_cache, looks_like_a_path
from .runtime import HALF

# The files of a diffusers pipeline; single-file checkpoints at the top level are not needed.
PULL_PATTERNS = ["model_index.json", "*/config.json", "*/*.json", "*/*.txt"]


def resolve_image_model(config: ImageConfig, source: str) -> Path:
    """A local pipeline folder for ``[image] model``; never downloads."""
    where = f"([image] model in {source})"
    folder = Path(config.model).expanduser()
    if not folder.is_dir():
        if looks_like_a_path(config.model):
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


def weight_files(folder: Path) -> list[str]:
    return [p.name for p in folder.glob("*/*.safetensors")]


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
    if not (folder / "model_index.json").is_file() or not weight_files(folder):
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
            str(
                snapshot_download(
                    repo_id,
                    cache_dir=cache,
                    allow_patterns=[*PULL_PATTERNS, weights],
                    ignore_patterns=ignore,
                )
            )
        )
        if weight_files(folder):
            break
    return folder


def _pull_dtype_is_half(config: ImageConfig) -> bool:
    """What :func:`pick_device` would choose here, without its warnings."""
    import torch

    if config.device == "cpu" or not torch.cuda.is_available():
        return False
    return config.dtype in ("auto", *HALF)
