"""Tiny random-weight vision-language models for tests, built locally (no hub).

* LLaVA (Transformers) with a 2-layer CLIP vision tower (56 px images, 14 px patches: 16
  image tokens per image), a 2-layer Llama text model and SmolLM2's tokenizer (from the
  bundled GGUF export) plus an ``<image>`` token, saved with its ``LlavaProcessor`` (CLIP
  image processor) and a ChatML template that writes ``<image>`` where a message has an
  image part.
* A tiny Qwen2-VL (multimodal RoPE) the same way.
* For llama.cpp: a LLaVA-style multimodal projector GGUF (``mmproj``) over the bundled
  SmolLM2-135M GGUF, written with the ``gguf`` package (:func:`build_tiny_mmproj`).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

IMAGE_TOKENS = 16  # (56 / 14) ** 2 patches, the CLS feature dropped ("default")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)



def _save(out: Path, model, processor, tok) -> Path:
    """Write a tiny vision checkpoint (weights, processor, tokenizer with the chat
    template) to ``out``; returns ``out``."""
    tok.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tok.save_pretrained(out)
    return out

def llava_tokenizer(tokenizer_dir: Path):
    """The tokenizer of ``tokenizer_dir`` with ``<image>`` added as a special token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tok


def save_llava(out: Path, tok, text_config, image_size: int, language_model=None,
               initializer_range=None, **vision) -> Path:
    """Build a LLaVA and save it (model, ``LlavaProcessor``, tokenizer, :data:`CHAT_TEMPLATE`)
    into ``out``; the tests' tiny one and the vision benchmark's both come from here.

    Args:
        tok: from :func:`llava_tokenizer`.
        text_config: the language model's config.
        image_size: pixels per side; the CLIP vision tower uses 14 px patches and the
            ``"default"`` feature strategy, so ``(image_size / 14) ** 2`` image tokens.
        language_model: a causal LM whose weights are copied into the LLaVA's (random
            weights when None).
        initializer_range: the std of the random weights, when not the config's default.
        vision: other ``CLIPVisionConfig`` fields (sizes, layers).
    """
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    config = LlavaConfig(vision_config=CLIPVisionConfig(image_size=image_size, patch_size=14,
                                                        **vision),
                         text_config=text_config,
                         image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    if initializer_range is not None:
        config.initializer_range = initializer_range
        text_config.initializer_range = initializer_range
    model = LlavaForConditionalGeneration(config).eval()
    if language_model is not None:
        model.model.language_model.load_state_dict(language_model.model.state_dict())
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                               vision_feature_select_strategy="default",
                               image_token="<image>", chat_template=CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    return _save(out, model, processor, tok)


def build_tiny_llava(tokenizer_dir: Path, out: Path) -> Path:
    """Save the tiny LLaVA (model, tokenizer, processor, template) into ``out``."""
    import torch
    from transformers import LlamaConfig

    torch.manual_seed(0)
    tok = llava_tokenizer(tokenizer_dir)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return save_llava(out, tok, text, 56, initializer_range=0.5, hidden_size=32,
                      intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      projection_dim=32)


QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_qwen2vl(tokenizer_dir: Path, out: Path) -> Path:
    """A tiny random-weight Qwen2-VL (multimodal RoPE), saved the way the hub repositories
    are: ``preprocessor_config.json`` naming ``Qwen2VLProcessor`` and the torchvision image
    processor, no video processor config, the chat template in the tokenizer."""
    import json

    import torch
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": [
        "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")}
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3]},
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2,
                           mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"])
    config.initializer_range = 0.5
    model = Qwen2VLForConditionalGeneration(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.chat_template = QWEN_TEMPLATE
    tok.save_pretrained(out)
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    ip.save_pretrained(out)
    cfg_path = out / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(image_processor_type="Qwen2VLImageProcessor", processor_class="Qwen2VLProcessor")
    cfg_path.write_text(json.dumps(cfg))
    return out


IDEFICS3_IMAGE_TOKENS = 4  # (32 / 8) ** 2 patches merged 2x2 (scale_factor 2)
#: what one image adds to the prompt: <fake_token_around_image><global-img>, the
#: <image> tokens, <fake_token_around_image>
IDEFICS3_PROMPT_TOKENS = IDEFICS3_IMAGE_TOKENS + 3


def build_tiny_idefics3(tokenizer_dir: Path, out: Path) -> Path:
    """A tiny random-weight Idefics3 (SmolVLM v1's architecture: a SigLIP-style vision
    tower, pixel shuffle, a Llama text model), saved as the hub repositories are: 32 px
    images of 8 px patches, no image splitting, so each image is ``<fake_token_around_image>
    <global-img>`` + :data:`IDEFICS3_IMAGE_TOKENS` ``<image>`` tokens +
    ``<fake_token_around_image>``. vLLM's CPU build runs this architecture without
    torchvision (its LLaVA and Qwen-VL modules import torchvision-backed processors)."""
    import torch
    from transformers import (AutoTokenizer, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3Processor, LlamaConfig)
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil)

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]})
    # head size 64 in the text model: vLLM's CPU attention has no kernel for 16
    text = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Idefics3Config(
        vision_config=dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        text_config=text, scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
    config.initializer_range = 0.5
    text.initializer_range = 0.5
    model = Idefics3ForConditionalGeneration(config).eval()
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                   max_image_size={"longest_edge": 32})
    processor = Idefics3Processor(image_processor=ip, tokenizer=tok,
                                  image_seq_len=IDEFICS3_IMAGE_TOKENS,
                                  chat_template=CHAT_TEMPLATE)
    return _save(out, model, processor, tok)


def _cached(kind: str, tokenizer_dir: Path, marker: str) -> Path:
    out = Path(tokenizer_dir).parent / f"tiny-{kind}-{Path(tokenizer_dir).name}"
    if (out / "config.json").exists() and (out / marker).exists():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    subprocess.run([sys.executable, "-m", "tests.vision_helpers", kind, str(tokenizer_dir),
                    str(tmp)], check=True, timeout=600)
    try:
        tmp.rename(out)
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cached_tiny_qwen2vl(tokenizer_dir: Path) -> Path:
    """:func:`build_tiny_qwen2vl` once per tokenizer directory (as :func:`cached_tiny_llava`)."""
    return _cached("qwen2vl", tokenizer_dir, "preprocessor_config.json")


def cached_tiny_idefics3(tokenizer_dir: Path) -> Path:
    """:func:`build_tiny_idefics3` once per tokenizer directory (as :func:`cached_tiny_llava`)."""
    return _cached("idefics3", tokenizer_dir, "processor_config.json")


def cached_tiny_llava(tokenizer_dir: Path) -> Path:
    """:func:`build_tiny_llava` once per tokenizer directory, in a subprocess (torch stays
    out of the test process), cached beside the GGUF export."""
    return _cached("llava", tokenizer_dir, "processor_config.json")


# ---- llama.cpp: a CLIP + MLP projector GGUF (mmproj) -----------------------------------------
#: image tokens the tiny mmproj gives each image: (56 / 14) ** 2 patches; llama.cpp's LLaVA
#: graph drops the class embedding's output
MMPROJ_IMAGE_TOKENS = 16
MMPROJ_VERSION = 1  # bump when the builder changes: cached files are rebuilt


def build_tiny_mmproj(text_gguf: Path, out: Path, seed: int = 0) -> Path:
    """Write a random-weight LLaVA-1.5-style multimodal projector GGUF to ``out``.

    What llama.cpp's ``mtmd``/``clip`` loader reads for projector type ``"mlp"``: the keys
    ``clip.has_vision_encoder``, ``clip.projector_type``, ``clip.vision.{image_size,
    patch_size, embedding_length, feed_forward_length, projection_dim, block_count,
    attention.head_count, attention.layer_norm_epsilon, image_mean, image_std}`` and the
    tensors of a CLIP ViT (``v.patch_embd.weight``, ``v.class_embd``,
    ``v.position_embd.weight``, ``v.pre_ln.*``, ``v.blk.N.{attn_q, attn_k, attn_v,
    attn_out, ln1, ln2, ffn_up, ffn_down}.{weight,bias}``) plus the two-layer MLP projector
    ``mm.0.*`` (vision width -> text width), GELU, ``mm.2.*`` (text width -> text width).
    Arrays are written in PyTorch's layout (``(out, in)`` for linear weights, ``(out, in,
    kh, kw)`` for the patch convolution); GGUF stores the reversed shape, which is what
    ggml expects. The projector's output width is the text model's ``embedding_length``
    (read from ``text_gguf``), or llama.cpp refuses the pair.

    Vision tower: width 32, 2 heads, 2 blocks (the LLaVA graph runs all but the last),
    feed-forward 64, 56 px images in 14 px patches: :data:`MMPROJ_IMAGE_TOKENS` per image.
    The projector's weights are scaled so an image embedding is about as large as a token
    embedding of SmolLM2 (std about 0.14): the image changes the logits, not drowns them.
    """
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(text_gguf))
    arch = reader.fields["general.architecture"].contents()
    n_text = int(reader.fields[f"{arch}.embedding_length"].contents())
    rng = np.random.default_rng(seed)
    width, ff, heads, blocks, image, patch = 32, 64, 2, 2, 56, 14
    n_pos = (image // patch) ** 2 + 1  # patches + the class embedding

    def rand(*shape, std=0.5):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w = gguf.GGUFWriter(str(out), arch="clip")
    w.add_name("tiny-mmproj-test")
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type("mlp")
    w.add_vision_image_size(image)
    w.add_vision_patch_size(patch)
    w.add_vision_embedding_length(width)
    w.add_vision_feed_forward_length(ff)
    w.add_vision_projection_dim(n_text)
    w.add_vision_block_count(blocks)
    w.add_vision_head_count(heads)
    w.add_vision_attention_layernorm_eps(1e-5)
    w.add_vision_image_mean([0.48145466, 0.4578275, 0.40821073])  # CLIP's
    w.add_vision_image_std([0.26862954, 0.26130258, 0.27577711])
    w.add_tensor("v.patch_embd.weight", rand(width, 3, patch, patch, std=0.1))
    w.add_tensor("v.class_embd", rand(width))
    w.add_tensor("v.position_embd.weight", rand(n_pos, width, std=0.1))
    w.add_tensor("v.pre_ln.weight", np.ones(width, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(width, np.float32))
    for i in range(blocks):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", rand(width, width, std=0.2))
            w.add_tensor(f"v.blk.{i}.{name}.bias", rand(width, std=0.02))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"v.blk.{i}.{name}.weight", np.ones(width, np.float32))
            w.add_tensor(f"v.blk.{i}.{name}.bias", np.zeros(width, np.float32))
        w.add_tensor(f"v.blk.{i}.ffn_up.weight", rand(ff, width, std=0.2))
        w.add_tensor(f"v.blk.{i}.ffn_up.bias", rand(ff, std=0.02))
        w.add_tensor(f"v.blk.{i}.ffn_down.weight", rand(width, ff, std=0.2))
        w.add_tensor(f"v.blk.{i}.ffn_down.bias", rand(width, std=0.02))
    w.add_tensor("mm.0.weight", rand(n_text, width, std=0.3))
    w.add_tensor("mm.0.bias", rand(n_text, std=0.02))
    w.add_tensor("mm.2.weight", rand(n_text, n_text, std=0.3 / n_text ** 0.5))
    w.add_tensor("mm.2.bias", rand(n_text, std=0.02))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def cached_tiny_gguf_vision(text_gguf: Path, add_bos: bool = False,
                            cache_root: Path = None) -> Path:
    """A directory holding ``text_gguf`` and two tiny projectors for it
    (:func:`build_tiny_mmproj`, seeds 0 and 1: ``mmproj-tiny-a.gguf``,
    ``mmproj-tiny-b.gguf``), made once under ``$XINFERENCE_TEST_CACHE`` (default
    ``~/.cache/xinference-test``) and reused while the text file and
    :data:`MMPROJ_VERSION` stay the same. The text GGUF is a symlink, or with ``add_bos``
    a copy whose ``tokenizer.ggml.add_bos_token`` is true (the tokenizer then adds the
    BOS itself, as Gemma's and Llama 3's do)."""
    import hashlib
    import shutil

    text_gguf = Path(text_gguf).resolve()
    st = text_gguf.stat()
    key = hashlib.sha256(f"{text_gguf}:{st.st_size}:{st.st_mtime_ns}:{MMPROJ_VERSION}"
                         .encode()).hexdigest()[:16]
    root = Path(cache_root or os.environ.get("XINFERENCE_TEST_CACHE")
                or Path.home() / ".cache" / "xinference-test")
    out = root / f"tiny-gguf-vision{'-bos' if add_bos else ''}-{key}"
    if (out / "mmproj-tiny-b.gguf").exists():
        return out
    tmp = root / f".{out.name}.{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    if add_bos:
        import gguf

        shutil.copyfile(text_gguf, tmp / text_gguf.name)
        reader = gguf.GGUFReader(str(tmp / text_gguf.name), "r+")  # edits in place
        field = reader.fields["tokenizer.ggml.add_bos_token"]
        field.parts[field.data[0]][0] = True
        del reader
    else:
        (tmp / text_gguf.name).symlink_to(text_gguf)
    build_tiny_mmproj(text_gguf, tmp / "mmproj-tiny-a.gguf", seed=0)
    build_tiny_mmproj(text_gguf, tmp / "mmproj-tiny-b.gguf", seed=1)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def png_bytes(color, size=(56, 56), fmt="PNG") -> bytes:
    """A one-colour image (or a gradient when ``color`` is ``"gradient"``) as bytes."""
    from PIL import Image

    if color == "gradient":
        img = Image.linear_gradient("L").convert("RGB").resize(size)
    else:
        img = Image.new("RGB", size, color)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    import base64

    return f"data:{mime};base64," + base64.b64encode(data).decode()


if __name__ == "__main__":  # pragma: no cover - used through _cached
    build = {"llava": build_tiny_llava, "qwen2vl": build_tiny_qwen2vl,
             "idefics3": build_tiny_idefics3}[sys.argv[1]]
    print(build(Path(sys.argv[2]), Path(sys.argv[3])))
