"""A tiny random Stable Diffusion pipeline, saved to a folder like a real one.

No Stable Diffusion model can be downloaded in tests, so this builds one from random
parts with the real architecture classes and the real CLIP tokenizer vocabulary
(from the ``clip`` package's BPE file), saves it with ``save_pretrained`` and lets
the product load it exactly as it loads ``stabilityai/sd-turbo``: through
``model_index.json`` and ``local_files_only``. The weights are seeded, so two builds
are identical; images are noise, but deterministic noise.

Sizes follow sd-turbo's layout at toy scale: a VAE that scales by 8 (so widths and
heights are multiples of 8 as for real models), a UNet whose native size is 8x8
latents (64x64 pixels), and sd-turbo's Euler scheduler with trailing timesteps,
which is what makes 1-4 step runs meaningful.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
HIDDEN = 32


def clip_bpe_file() -> Path:
    """The BPE merges shipped in OpenAI's ``clip`` package (clip-anytorch).

    Found with ``find_spec``, never imported: ``import clip`` needs torchvision.
    """
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the clip package (clip-anytorch, installed --no-deps) is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary built as ``clip.simple_tokenizer.SimpleTokenizer`` builds it."""
    lines = gzip.decompress(clip_bpe_file().read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(bytes_to_unicode().values())
    words = base + [c + "</w>" for c in base]
    words += ["".join(merge.split()) for merge in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return {word: i for i, word in enumerate(words)}, merges


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` in the layout transformers' CLIPTokenizer reads."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def build_tiny_pipeline(folder: Path) -> Path:
    """Build, seed and save a tiny StableDiffusionPipeline into ``folder``; returns it."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    d: Any = diffusers  # its constructors are untyped
    torch.manual_seed(0)
    unet = d.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=HIDDEN,
        attention_head_dim=(2, 4),
    )
    vae = d.AutoencoderKL(  # four blocks: three down-samplings, the factor 8 of real SD VAEs
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_MAX_LENGTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    vocab_file, merges_file = write_clip_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_file), merges=str(merges_file), model_max_length=CLIP_MAX_LENGTH
    )
    scheduler = d.EulerDiscreteScheduler(  # stabilityai/sd-turbo's scheduler_config.json
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="trailing",
    )
    pipe = d.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder
