"""The Generator on a tiny random Stable Diffusion pipeline built and saved here.

No Stable Diffusion model can be downloaded in tests, so ``tests/tinysd.py`` builds
one with the real classes and the real CLIP vocabulary; the Generator loads it the
way it loads sd-turbo, from a folder with ``local_files_only``.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from speech2image.config import ImageConfig
from speech2image.images.generate import Generator
from speech2image.images.pull import pull_image_model
from speech2image.images.runtime import GenerationError
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


def pixels(generator: Generator, seed: int, prompt: str = "a red fox") -> np.ndarray:
    return np.asarray(generator.generate(prompt, seed=seed).image)


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
    assert result.seconds > 0  # measured, whatever it was


# NaN anywhere in the latents (a broken VAE, a half-precision overflow) spreads through
# the decoder and reaches numpy's cast to 8 bits, which warns and writes 0: a black
# picture. Made an error here, so a NaN fails loudly instead of looking like a picture.
@pytest.mark.filterwarnings("error:invalid value encountered in cast:RuntimeWarning")
def test_pixels_are_finite_and_follow_prompt_and_seed(generator: Generator) -> None:
    fox = pixels(generator, 7)
    assert len(np.unique(fox.reshape(-1, 3), axis=0)) > 1  # not one flat colour (NaN, inf)
    assert np.array_equal(fox, pixels(generator, 7))  # same prompt and seed: same picture
    assert not np.array_equal(fox, pixels(generator, 8))  # the seed reaches the noise
    assert not np.array_equal(fox, pixels(generator, 7, "a blue whale"))  # the prompt, the UNet


def test_pixels_are_the_ones_diffusers_would_have_saved(generator: Generator) -> None:
    """The NaN check takes diffusers' float output; the 8-bit picture is unchanged."""
    import torch

    ours = pixels(generator, 11)
    theirs = generator.pipe(
        "a red fox",
        num_inference_steps=2,
        guidance_scale=0.0,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(11),
        output_type="pil",
    ).images[0]
    assert np.array_equal(ours, np.asarray(theirs.convert("RGB")))


@pytest.fixture(scope="module")
def nan_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a damaged VAE on disk: one NaN weight in its last layer."""
    from safetensors.torch import load_file, save_file

    damaged = tmp_path_factory.mktemp("nan-sd") / "model"
    shutil.copytree(tiny_model, damaged)
    (weights,) = (damaged / "vae").glob("*.safetensors")
    tensors = load_file(weights)
    tensors["decoder.conv_out.weight"].view(-1)[0] = float("nan")
    save_file(tensors, weights)
    return damaged


@pytest.mark.filterwarnings("error:invalid value encountered in cast:RuntimeWarning")
def test_a_model_that_draws_nan_is_refused_at_warm_up(nan_model: Path) -> None:
    damaged = Generator(config(nan_model), SOURCE)
    with pytest.raises(ModelError) as caught:
        damaged.warm_up()
    message = str(caught.value)
    assert f"{str(nan_model)!r} drew NaN pixels (float32)" in message
    assert f"[image] model in {SOURCE}" in message


@pytest.mark.filterwarnings("error:invalid value encountered in cast:RuntimeWarning")
def test_nan_pixels_are_an_error_not_a_black_picture(nan_model: Path) -> None:
    damaged = Generator(config(nan_model), SOURCE)
    with pytest.raises(GenerationError, match="drew NaN pixels"):
        damaged.generate("a red fox", seed=1)


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


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A Hugging Face endpoint that hangs up on every request, whatever network this
    machine has; yields the requests it was sent."""
    server = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.settimeout(5)
                requests.append(conn.recv(4096))

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    port = server.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    yield requests
    server.close()
    thread.join(timeout=10)


def test_pull_with_the_hub_unreachable_and_nothing_cached_is_a_clear_error(
    empty_hf_cache: Path, unreachable_hub: list[bytes]
) -> None:
    said: list[str] = []
    with pytest.raises(ModelError, match="could not download image model 'nobody/nothing'"):
        pull_image_model(config("nobody/nothing"), said.append)
    assert any(b"/api/models/nobody/nothing/" in r for r in unreachable_hub)  # it did ask
    assert said == [f"image model: downloading nobody/nothing into {empty_hf_cache}"]
    assert not list(empty_hf_cache.rglob("*.json"))  # nothing half-pulled left behind


# The memory options, each checked where it really acts: at 96 px the latents are 12x12,
# over the tiny VAE's 8x8 latent tile (its sample_size 64 / its factor 8), so vae_tiling
# decodes four overlapping tiles. At 64 px it would decode one tile: the whole picture.
TILED = 96
MEMORY_OPTIONS = ("channels_last", "attention_slicing", "vae_tiling")


def levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)  # signed: uint8 differences would wrap


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2.0))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def applied(generator: Generator, option: str) -> bool:
    """Whether ``option`` is in effect on the pipeline the Generator built."""
    import torch
    from diffusers.models.attention_processor import SlicedAttnProcessor

    pipe = generator.pipe
    if option == "channels_last":
        weights = [p for p in pipe.unet.parameters() if p.dim() == 4]  # the convolutions'
        return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    if option == "attention_slicing":
        processors = pipe.unet.attn_processors.values()
        return bool(processors) and all(isinstance(p, SlicedAttnProcessor) for p in processors)
    assert option == "vae_tiling"
    latent = TILED // pipe.vae_scale_factor
    return bool(pipe.vae.use_tiling) and latent > pipe.vae.tile_latent_min_size


@pytest.fixture(scope="module")
def whole(tiny_model: Path) -> np.ndarray:
    """The reference: no memory option, the picture decoded in one piece."""
    plain = Generator(config(tiny_model, width=TILED, height=TILED), SOURCE)
    assert not any(applied(plain, option) for option in MEMORY_OPTIONS)
    return levels(plain.generate("a red fox", seed=1).image)


def assert_tiled_close(tuned: np.ndarray, whole: np.ndarray) -> None:
    """Tiling changes the picture, by design: each tile is decoded on its own (the
    decoder's group norms see one tile's statistics, not the whole picture's) and the
    overlaps are blended. With the tiny random VAE, which is harsher on seams than a
    trained one, that is 26.3 dB and 9.3 levels on average (measured). The bounds are
    set to fail what tiling done wrong gives here: overlaps not blended, 21.8 dB and
    15.1 levels; tiles half the size, 20.2 dB and 18.6; tiles in the wrong places,
    13 dB and 43 (another seed's picture: 12.9 dB, 44 levels)."""
    difference = np.abs(tuned - whole)
    assert difference.max() > 1  # more than rounding: the tiled decoder really ran
    assert psnr(tuned, whole) >= 24
    assert difference.mean() <= 12


# channels_last reorders the convolutions' memory and with it the order of float sums,
# so a value may round to the neighbouring 8-bit level (1 value in 49,152 at 128 px,
# none at 96); attention slicing runs each slice of heads on its own, the same sums.
# Neither may change the picture beyond that.
@pytest.mark.parametrize("option", ["channels_last", "attention_slicing"])
def test_memory_option_keeps_the_picture(tiny_model: Path, whole: np.ndarray, option: str) -> None:
    tuned = Generator(config(tiny_model, width=TILED, height=TILED, **{option: True}), SOURCE)
    assert applied(tuned, option)
    difference = np.abs(levels(tuned.generate("a red fox", seed=1).image) - whole)
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= difference.size // 1000


def test_vae_tiling_decodes_in_tiles_close_to_the_whole_picture(
    tiny_model: Path, whole: np.ndarray
) -> None:
    tuned = Generator(config(tiny_model, width=TILED, height=TILED, vae_tiling=True), SOURCE)
    assert applied(tuned, "vae_tiling")
    assert_tiled_close(levels(tuned.generate("a red fox", seed=1).image), whole)


def test_all_memory_options_together_and_cpu_offload_ignored_on_the_cpu(
    tiny_model: Path, whole: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    options = dict.fromkeys(MEMORY_OPTIONS, True)
    changes = {"width": TILED, "height": TILED, "cpu_offload": True, **options}
    tuned = Generator(config(tiny_model, **changes), SOURCE)
    assert all(applied(tuned, option) for option in MEMORY_OPTIONS)
    assert "cpu_offload does nothing on the CPU" in caplog.text
    tuned.warm_up()  # at 64 px, one tile
    assert_tiled_close(levels(tuned.generate("a red fox", seed=1).image), whole)
