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
  builds from configs alone.
* :func:`build_tiny_flux` — a ``FluxPipeline`` (``FluxTransformer2DModel``, a CLIP and a
  T5 text encoder, flow-matching scheduler), the class of FLUX.1 [schnell] / [dev].
* :func:`build_tiny_sd3` — a ``StableDiffusion3Pipeline`` (``SD3Transformer2DModel``, two
  CLIP encoders with projection and a T5 encoder), the class of SD 3 / 3.5.
* :func:`build_tiny_wan` — a ``WanPipeline`` (``WanTransformer3DModel``, UMT5 encoder,
  ``AutoencoderKLWan``), the class of Wan 2.1 / 2.2 text-to-video.
* :func:`build_tiny_cogvideox` — a ``CogVideoXPipeline`` (CogVideoX-2b / 5b).
* :func:`build_tiny_ltx` — an ``LTXPipeline`` (LTX-Video).
* :func:`build_tiny_zimage` — a ``ZImagePipeline`` (Z-Image, Z-Image-Turbo) with a Qwen3
  text encoder.
* :func:`build_tiny_qwenimage` — a ``QwenImagePipeline`` (Qwen-Image) with a Qwen2.5-VL
  text encoder.

The T5 tokenizer is a Unigram model over letters and a few words, the Qwen tokenizer a
byte-level BPE over the 256 bytes with a ChatML template (both built with ``tokenizers``),
each saved as the model's own tokenizer class.
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
    from transformers import CLIPTokenizer

    tok_dir = tmp / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    _write_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"),
                              model_max_length=77)
    return tokenizer, _clip_encoder(seed, tokenizer)


def _vae(seed: int, **config):
    """A 2-block ``AutoencoderKL`` (factor 2, 4 latent channels unless ``config`` says);
    ``config`` adds to its configuration (FLUX and SD3 read ``shift_factor``)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    config = {"latent_channels": 4, **config}
    return AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8,
                         sample_size=64, **config)


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


def _t5_tokenizer():
    """A ``T5TokenizerFast``: a Unigram vocabulary of letters, digits, punctuation and
    :data:`_WORDS` with T5's special tokens (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0) for w in _WORDS]
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        vocab += [(ch, -5.0), ("\u2581" + ch, -5.0)]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                      special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", extra_ids=0)


def _t5_encoder(seed: int, vocab_size: int, d_model: int = 32, umt5: bool = False):
    """A 2-layer T5 (or UMT5) encoder of width ``d_model`` with random weights."""
    import torch
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    cfg, cls = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    return cls(cfg(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                   num_heads=4, relative_attention_num_buckets=8,
                   decoder_start_token_id=0)).eval()


def _clip_encoder(seed: int, tokenizer, projection: bool = False):
    """A 2-layer, 32-wide CLIP text encoder (``CLIPTextModelWithProjection`` when
    ``projection``) with random weights."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=77, projection_dim=32,
                            bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


#: the VAE scaling of the flow-matching pipelines (FLUX.1's values)
_FLOW_VAE = {"shift_factor": 0.1159, "scaling_factor": 0.3611}


def build_tiny_flux(path, seed: int = 0) -> str:
    """Save a tiny ``FluxPipeline`` (random weights) to ``path``; returns the directory.
    Latents are packed 2x2, so sides are multiples of 8 here (VAE factor 2 times 2 ...
    rounded up to the engine's 8)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    path = Path(path)
    tokenizer, text_encoder = _text_parts(path.parent / f".{path.name}-src", seed)
    t5_tok = _t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=32, axes_dims_rope=(4, 4, 8))
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(),
                        vae=_vae(seed, **_FLOW_VAE),
                        text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=_t5_encoder(seed, len(t5_tok)), tokenizer_2=t5_tok,
                        transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_sd3(path, seed: int = 0) -> str:
    """Save a tiny ``StableDiffusion3Pipeline`` (random weights) to ``path``; returns the
    directory."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)

    path = Path(path)
    tokenizer, _ = _text_parts(path.parent / f".{path.name}-src", seed)
    t5_tok = _t5_tokenizer()
    torch.manual_seed(seed)
    # the two CLIP outputs (32 + 32 wide) are padded to the T5 width, which must be wider
    transformer = SD3Transformer2DModel(
        sample_size=32, patch_size=1, in_channels=16, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=64,
        pooled_projection_dim=64, out_channels=16)  # 16 latent channels, as SD3's VAE
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(seed, latent_channels=16, **_FLOW_VAE),
        text_encoder=_clip_encoder(seed, tokenizer, True), tokenizer=tokenizer,
        text_encoder_2=_clip_encoder(seed + 1, tokenizer, True), tokenizer_2=tokenizer,
        text_encoder_3=_t5_encoder(seed, len(t5_tok), d_model=64), tokenizer_3=t5_tok)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_wan(path, seed: int = 0) -> str:
    """Save a tiny ``WanPipeline`` (random weights) to ``path``; returns the directory.
    Sides are multiples of 16 (the VAE's 8 times the 2x2 patches); ``num_frames`` is
    ``4k + 1``."""
    import torch
    from diffusers import (AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline,
                           WanTransformer3DModel)

    t5_tok = _t5_tokenizer()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    pipe = WanPipeline(tokenizer=t5_tok, text_encoder=_t5_encoder(seed, len(t5_tok), umt5=True),
                       vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                       transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_cogvideox(path, seed: int = 0) -> str:
    """Save a tiny ``CogVideoXPipeline`` (random weights) to ``path``; returns the
    directory. ``num_frames`` is ``4k + 1`` (an odd number of latent frames decodes to
    that many frames with this VAE: 9 -> 3 -> 9)."""
    import torch
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline,
                           CogVideoXTransformer3DModel)

    tok = _t5_tokenizer()
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=32, num_layers=1, sample_width=8, sample_height=8,
        sample_frames=9, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=226)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                 layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4)
    pipe = CogVideoXPipeline(tokenizer=tok, text_encoder=_t5_encoder(seed, len(tok)), vae=vae,
                             transformer=transformer, scheduler=CogVideoXDDIMScheduler())
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_ltx(path, seed: int = 0) -> str:
    """Save a tiny ``LTXPipeline`` (random weights) to ``path``; returns the directory.
    Sides are multiples of 32 (the pipeline's rule); ``num_frames`` is ``8k + 1``."""
    import torch
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler,
                           LTXPipeline, LTXVideoTransformer3DModel)

    tok = _t5_tokenizer()
    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)
    torch.manual_seed(seed)
    flags = dict(spatio_temporal_scaling=(True, True, False, False),
                 decoder_spatio_temporal_scaling=(True, True, False, False),
                 decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                 upsample_factor=(1,) * 4)
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False, **flags)
    pipe = LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                       text_encoder=_t5_encoder(seed, len(tok)), tokenizer=tok,
                       transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def _qwen_tokenizer():
    """A ``Qwen2TokenizerFast``: byte-level BPE over the 256 bytes (no merges) with
    Qwen's special tokens and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = Qwen2TokenizerFast(tokenizer_object=tk, unk_token=None, bos_token=None,
                             eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tok


def build_tiny_zimage(path, seed: int = 0) -> str:
    """Save a tiny ``ZImagePipeline`` (random weights; a 2-layer Qwen3 text encoder) to
    ``path``; returns the directory. Sides are multiples of 4 (VAE factor 2, 2x2
    patches)."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, ZImagePipeline,
                           ZImageTransformer2DModel)
    from transformers import Qwen3Config, Qwen3Model

    tok = _qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8,
        max_position_embeddings=512)).eval()
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16, axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32])
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(),
                          vae=_vae(seed, latent_channels=16, **_FLOW_VAE),
                          text_encoder=text_encoder, tokenizer=tok, transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_qwenimage(path, seed: int = 0) -> str:
    """Save a tiny ``QwenImagePipeline`` (random weights; a 2-layer Qwen2.5-VL text encoder
    with a 2-block vision tower, ``AutoencoderKLQwenImage``) to ``path``; returns the
    directory. Sides are multiples of 8 (VAE factor 4, 2x2 patches)."""
    import torch
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler,
                           QwenImagePipeline, QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tok = _qwen_tokenizer()
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=16,
                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                rope_theta=1000000.0, max_position_embeddings=1024,
                rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
                bos_token_id=None, eos_token_id=tok.eos_token_id)
    vision = dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2,
                  out_hidden_size=16)
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, vocab_size=len(tok))).eval()
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
        num_attention_heads=3, joint_attention_dim=16, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True],
                                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                             text_encoder=text_encoder, tokenizer=tok,
                             transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)
