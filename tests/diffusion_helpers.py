"""Small diffusion pipelines with random weights, built from configs and saved with
``save_pretrained``, for the image and video tests and the image benchmark.

No diffusion weights ship in any package here, so these pipelines stand in for real ones:
they have the real architecture (a Stable Diffusion UNet, VAE, CLIP text encoder and
tokenizer, a scheduler) at a tiny size, which is honest for the loading, generation and
serving code but makes noise images. The CLIP tokenizer runs over a hand-written
vocabulary and merges file.

* :func:`build_tiny_sd` — a ``StableDiffusionPipeline`` (``UNet2DConditionModel``,
  ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer``, ``DDIMScheduler``); diffusers'
  AutoPipelines derive image-to-image and inpainting pipelines from it.
* :func:`build_tiny_video` — a ``TextToVideoSDPipeline`` (``UNet3DConditionModel`` with the
  same VAE, text encoder and tokenizer): the smallest diffusers text-to-video pipeline that
  builds from configs alone (CogVideoX and Wan need a T5 encoder and a 3D VAE).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

#: words the tokenizer knows whole (everything else falls back to letters)
_WORDS = ["a", "the", "cat", "dog", "red", "blue", "photo", "of", "on", "sky", "tree",
          "house", "painting", "car", "bench", "benchmark"]


def _write_tokenizer_files(d: Path) -> None:
    """A byte-level BPE vocabulary (letters, digits, punctuation, a few words) and merges
    that build those words, in CLIP's format (``</w>`` marks a word's end)."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        tokens += [ch, ch + "</w>"]
    merges = []
    for w in _WORDS:
        if len(w) < 2:
            continue
        # Merge left to right: "c a", "ca t</w>" ...
        prev = w[0]
        for i, ch in enumerate(w[1:], start=1):
            piece = ch + ("</w>" if i == len(w) - 1 else "")
            merges.append(f"{prev} {piece}")
            prev = prev + piece
            if prev not in tokens:
                tokens.append(prev)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges))
                                  + "\n", encoding="utf-8")


def _text_parts(tmp: Path, seed: int):
    """``(tokenizer, text_encoder)``: a CLIP tokenizer over the hand-written files and a
    2-layer, 32-wide CLIP text encoder with random weights."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok_dir = tmp / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    _write_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=77, projection_dim=32,
                            bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return tokenizer, CLIPTextModel(config).eval()


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                         norm_num_groups=8, sample_size=64)


def _save_pipeline(path, seed: int, pipeline_cls, unet_cls, unet_config: dict,
                   **extra) -> str:
    """Build ``pipeline_cls`` from the tiny text parts and VAE, a ``unet_cls(**unet_config)``
    and a DDIM scheduler (seeded in that order, so a seed gives the same weights), save it
    to ``path`` and return the directory; ``extra`` goes to the pipeline."""
    import torch
    from diffusers import DDIMScheduler

    path = Path(path)
    tokenizer, text_encoder = _text_parts(path.parent / f".{path.name}-src", seed)
    torch.manual_seed(seed)
    unet = unet_cls(**unet_config)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False)
    pipe = pipeline_cls(vae=_vae(seed), text_encoder=text_encoder, tokenizer=tokenizer,
                        unet=unet, scheduler=scheduler, **extra)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_sd(path, seed: int = 0) -> str:
    """Save a tiny Stable Diffusion pipeline (random weights, about 1 MB) to ``path``;
    returns the directory. Images are multiples of 8 pixels (VAE factor 2 ... see
    ``vae_scale_factor``: 2 here, latent 4 channels); 64x64 takes well under a second per
    step on a CPU."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    return _save_pipeline(
        path, seed, StableDiffusionPipeline, UNet2DConditionModel, dict(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=8,
        ),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def build_tiny_video(path, seed: int = 0) -> str:
    """Save a tiny ``TextToVideoSDPipeline`` (random weights) to ``path``; returns the
    directory."""
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    return _save_pipeline(
        path, seed, TextToVideoSDPipeline, UNet3DConditionModel, dict(
            block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=32,
            attention_head_dim=4, norm_num_groups=4,
        ))
