"""The Generator on a tiny random Stable Diffusion pipeline built and saved here.

No Stable Diffusion model can be downloaded in tests, so ``tests/tinysd.py`` builds
one with the real classes and the real CLIP vocabulary; the Generator loads it the
way it loads sd-turbo, from a folder with ``local_files_only``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from speech2image.config import ImageConfig
from speech2image.images.generate import Generator
from speech2image.images.pull import pull_image_model
from speech2image.model_files import ModelError
from tests.tinysd import build_tiny_pipeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # diffusers' schedulers call np.array() on tensors; numpy 2 deprecates how torch answers
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
SOURCE = "test.toml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


def config(model: Path | str, **changes: object) -> ImageConfig:
    values: dict[str, object] = {"width": 64, "height": 64, "steps": 2, "guidance": 0.0}
    return ImageConfig(model=str(model), **{**values, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def generator(tiny_model: Path) -> Generator:
    loaded = Generator(config(tiny_model), SOURCE)
    loaded.warm_up()
    return loaded


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def pixels(generator: Generator, seed: int) -> np.ndarray:
    return np.asarray(generator.generate("a red fox", seed=seed).image)


def test_generates_an_image_with_its_recipe(generator: Generator, tiny_model: Path) -> None:
    result = generator.generate("a red fox sleeping under a cherry tree", seed=42)
    assert result.image.size == (64, 64)
    assert result.image.mode == "RGB"
    assert (result.recipe.seed, result.recipe.steps, result.recipe.guidance) == (42, 2, 0.0)
    assert (result.recipe.width, result.recipe.height) == (64, 64)
    assert result.recipe.sampler == "EulerDiscreteScheduler"  # the model's own, as saved
    assert result.recipe.model == str(tiny_model)
    assert (result.recipe.device, result.recipe.dtype) == ("cpu", "float32")
    assert result.recipe.negative_prompt == ""
    assert 0 < result.seconds < 30
    assert np.asarray(result.image).std() > 0  # not a blank (safety-checker) image


def test_same_seed_same_pixels_other_seed_other_pixels(generator: Generator) -> None:
    first, again, other = pixels(generator, 7), pixels(generator, 7), pixels(generator, 8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_random_seed_is_recorded_and_reproduces_the_image(generator: Generator) -> None:
    drawn = generator.generate("a red fox")  # [image] seed = -1 by default
    assert 0 <= drawn.recipe.seed < 2**32
    assert np.array_equal(np.asarray(drawn.image), pixels(generator, drawn.recipe.seed))


def test_fixed_seed_from_config(tiny_model: Path) -> None:
    fixed = Generator(config(tiny_model, seed=5), SOURCE)
    results = [fixed.generate("a red fox") for _ in range(2)]
    assert [r.recipe.seed for r in results] == [5, 5]
    assert np.array_equal(np.asarray(results[0].image), np.asarray(results[1].image))


def test_other_scheduler_guidance_and_negative_prompt(tiny_model: Path) -> None:
    changes = {"scheduler": "DDIMScheduler", "guidance": 4.0, "negative_prompt": "blurry"}
    other = Generator(config(tiny_model, **changes), SOURCE)
    result = other.generate("a red fox", seed=1)
    assert result.recipe.sampler == "DDIMScheduler"
    assert (result.recipe.guidance, result.recipe.negative_prompt) == (4.0, "blurry")
    assert result.image.size == (64, 64)


def test_euler_scheduler_by_name(tiny_model: Path) -> None:
    named = Generator(config(tiny_model, scheduler="EulerAncestralDiscreteScheduler"), SOURCE)
    assert named.generate("a red fox", seed=1).recipe.sampler == "EulerAncestralDiscreteScheduler"


@pytest.mark.parametrize("name", ["FancyScheduler", "StableDiffusionPipeline", "torch"])
def test_unknown_scheduler_is_a_clear_error(tiny_model: Path, name: str) -> None:
    with pytest.raises(ModelError) as caught:
        Generator(config(tiny_model, scheduler=name), SOURCE)
    message = str(caught.value)
    assert f"[image] scheduler = {name!r} in {SOURCE}" in message
    assert "EulerDiscreteScheduler" in message


def test_missing_hub_model_names_key_cache_and_fix(empty_hf_cache: Path) -> None:
    with pytest.raises(ModelError) as caught:
        Generator(config("nobody/nothing"), SOURCE)
    message = str(caught.value)
    assert "'nobody/nothing'" in message
    assert f"[image] model in {SOURCE}" in message
    assert str(empty_hf_cache) in message
    assert "speech2image models pull" in message


def test_missing_folder_and_non_pipeline_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        Generator(config(tmp_path / "no-such-model"), SOURCE)
    with pytest.raises(ModelError, match=r"no model_index\.json"):
        Generator(config(tmp_path), SOURCE)


def test_pull_uses_a_folder_as_is(tiny_model: Path) -> None:
    said: list[str] = []
    pull_image_model(config(tiny_model), said.append)
    assert said == [f"image model: using the folder {tiny_model} as is"]


def fake_hub_cache(cache: Path, repo_id: str, model: Path) -> Path:
    """The layout huggingface_hub's snapshot_download leaves: refs/main -> snapshots/<sha>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(model, snapshot)
    return snapshot


def test_hub_id_loads_from_the_local_cache_only(empty_hf_cache: Path, tiny_model: Path) -> None:
    fake_hub_cache(empty_hf_cache, "tiny/sd", tiny_model)
    cached = Generator(config("tiny/sd"), SOURCE)
    result = cached.generate("a red fox", seed=3)
    assert result.recipe.model == "tiny/sd"
    assert result.image.size == (64, 64)


def test_pull_offline_keeps_a_cached_model(
    empty_hf_cache: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, snapshot_download falls back to the local snapshot: `make run` stays quick."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # even with network
    snapshot = fake_hub_cache(empty_hf_cache, "tiny/sd", tiny_model)
    said: list[str] = []
    pull_image_model(config("tiny/sd"), said.append)
    assert said[-1] == f"image model: tiny/sd ready in {snapshot}"


def test_pull_without_network_and_nothing_cached_fails_fast(empty_hf_cache: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ModelError, match="could not download image model 'nobody/nothing'"):
        pull_image_model(config("nobody/nothing"), lambda _: None)
    assert time.monotonic() - started < 30


def test_memory_options_still_give_the_same_kind_of_image(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = {"channels_last": True, "attention_slicing": True, "vae_tiling": True}
    tuned = Generator(config(tiny_model, cpu_offload=True, **options), SOURCE)
    tuned.warm_up()
    assert tuned.generate("a red fox", seed=1).image.size == (64, 64)
    assert "cpu_offload does nothing on the CPU" in caplog.text
