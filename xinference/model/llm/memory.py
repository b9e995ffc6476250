"""Will it fit? An estimate of the memory an LLM launch takes: weights + KV cache +
activations, from the model's shape (layers, attention heads, KV heads, head size, hidden
and MLP sizes, vocabulary) and the bits of its format / quantization.

Shapes come from the model's own files, first found wins: a local GGUF file of the spec
(its header: ``{arch}.block_count`` ...), a ``config.json`` in a local directory of the
family (the cache or ``model_path``), or, when ``download`` is allowed (``xinference
cal-model-mem``, ``GET /v1/models/{name}/memory``), ``config.json`` fetched alone from the
hub of a non-GGUF spec of the same size. Without a shape the estimate is the weights only
(``shape_source`` None), a lower bound: the launch planner then refuses only launches whose
weights alone do not fit.

Formulas (bytes; ``C`` context tokens, ``L`` layers, ``kv`` KV heads, ``d`` head size):

* weights: the GGUF file's size when it is local, else parameters x bits / 8, parameters
  from the shape (embeddings, attention, gated MLP; MoE experts counted) or the spec's
  ``model_size_in_billions``;
* KV cache: 2 x L x kv x d x C x (2 bytes for llama.cpp's f16 cache, the weights' dtype
  for Transformers); DeepSeek-style MLA caches ``kv_lora_rank + qk_rope_head_dim`` per
  token and layer;
* activations, llama.cpp: one micro-batch of ``u = min(512, C)`` tokens in float32:
  4 x u x (heads x C + 3 x intermediate + 4 x hidden) plus one row of logits;
  Transformers: a prefill of C tokens in float32: 4 x C x (vocab + heads x C +
  3 x intermediate + 4 x hidden) (logits for every prompt position, eager attention
  scores, MLP and residual stream).

Checked against real loads of SmolLM2-135M here (``tests/test_memory_estimate.py``):
within 25% of the measured resident-memory growth on both engines.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

GIB = 2 ** 30

# Bits per weight of each quantization as published (llama.cpp's block formats include
# their scales: Q4_0 = 4.5, Q4_1 = 5.0 ...; K-quants as llama.cpp's quantize tool lists
# them). Unknown names fall back to the digits they carry (``q3_k_s`` -> 3.5).
QUANT_BITS: Dict[str, float] = {
    "f32": 32, "fp32": 32, "f16": 16, "fp16": 16, "bf16": 16, "none": 16,
    "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.69, "q5_k_s": 5.54, "q5_0": 5.5, "q5_1": 6.0,
    "q4_k_m": 4.85, "q4_k_s": 4.58, "q4_0": 4.5, "q4_1": 5.0, "iq4_xs": 4.25,
    "q3_k_l": 4.27, "q3_k_m": 3.91, "q3_k_s": 3.5, "q2_k": 2.63, "iq2_m": 2.7,
    "mxfp4": 4.25, "int4": 4.25, "int8": 8.5, "4-bit": 4.5, "8-bit": 8.5, "fp8": 8,
}
DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float8_e4m3fn": 8}


@dataclass
class ModelShape:
    """The sizes an estimate needs (Hugging Face ``config.json`` names)."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype_bits: int = 16
    tie_word_embeddings: bool = False
    num_experts: int = 1
    moe_intermediate_size: int = 0
    kv_lora_rank: int = 0  # DeepSeek MLA
    qk_rope_head_dim: int = 0

    @classmethod
    def from_config(cls, cfg: Dict[str, Any]) -> "ModelShape":
        """From a ``config.json`` dict (a vision-language model's ``text_config``).

        Raises:
            KeyError: a required size is missing.
        """
        if "num_hidden_layers" not in cfg and isinstance(cfg.get("text_config"), dict):
            cfg = dict(cfg["text_config"], dtype=cfg.get("dtype") or cfg.get("torch_dtype"))
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
        return cls(
            num_hidden_layers=int(cfg["num_hidden_layers"]), hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab_size=int(cfg["vocab_size"]), dtype_bits=DTYPE_BITS.get(dtype, 16),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            num_experts=int(cfg.get("num_experts") or cfg.get("n_routed_experts")
                            or cfg.get("num_local_experts") or 1),
            moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0),
            kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
            qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
        )

    @classmethod
    def from_gguf(cls, path: str) -> "ModelShape":
        """From a GGUF file's header (:func:`~.gguf_header.read_gguf_metadata`: the
        numbers only, the vocabulary counted, not read). A per-layer array where one
        number is expected gives its first element.

        Raises:
            KeyError: the header lacks a required key.
            ValueError: not a GGUF file (see :func:`~.gguf_header.read_gguf_metadata`).
        """
        from .gguf_header import read_gguf_metadata

        meta = read_gguf_metadata(path)

        def value(key: str, default: Any = None) -> Any:
            v = meta.get(key)
            if isinstance(v, list):
                v = v[0] if v else None
            if v is None:
                if default is None:
                    raise KeyError(key)
                return default
            return v

        arch = meta["general.architecture"]
        heads = int(value(f"{arch}.attention.head_count"))
        hidden = int(value(f"{arch}.embedding_length"))
        tokens = meta.get("tokenizer.ggml.tokens")
        vocab = len(tokens) if tokens is not None else int(value(f"{arch}.vocab_size"))
        return cls(
            num_hidden_layers=int(value(f"{arch}.block_count")), hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=int(value(f"{arch}.attention.head_count_kv", heads)),
            head_dim=int(value(f"{arch}.attention.key_length", hidden // heads)),
            intermediate_size=int(value(f"{arch}.feed_forward_length", 4 * hidden)),
            vocab_size=vocab, num_experts=int(value(f"{arch}.expert_count", 1)),
        )

    def parameters(self) -> float:
        """Parameter count: embeddings (and an untied output head), attention, gated MLP
        (all experts of a MoE layer)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
        inter = self.moe_intermediate_size or self.intermediate_size
        mlp = 3 * h * inter * max(1, self.num_experts)
        emb = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return float(self.num_hidden_layers * (attn + mlp) + emb)

    def kv_bytes_per_token(self, dtype_bytes: float) -> float:
        """KV-cache bytes one token takes over all layers."""
        if self.kv_lora_rank:
            per_layer = self.kv_lora_rank + self.qk_rope_head_dim
        else:
            per_layer = 2 * self.num_key_value_heads * self.head_dim
        return self.num_hidden_layers * per_layer * dtype_bytes


@dataclass
class MemoryEstimate:
    """An estimate in bytes, with what it was computed from."""

    model_name: str
    model_format: str
    model_size_in_billions: str
    quantization: str
    context_length: int
    engine: str
    weights: int
    kv_cache: int
    activations: int
    total: int
    shape_source: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``about 1.2 GiB (weights 0.8 + KV cache 0.3 + activations 0.1 GiB, context
        2048)``, the text refusals carry."""
        g = lambda b: f"{b / GIB:.2f}"  # noqa: E731
        parts = (f"weights {g(self.weights)} GiB; KV cache and activations unknown, no "
                 "config found" if self.shape_source is None else
                 f"weights {g(self.weights)} + KV cache {g(self.kv_cache)} + activations "
                 f"{g(self.activations)} GiB")
        return (f"about {g(self.total)} GiB for {self.model_name} "
                f"{self.model_format}/{self.model_size_in_billions}B/{self.quantization} on "
                f"{self.engine} ({parts}, context {self.context_length})")


def quant_bits(quantization: str, model_format: str, shape: Optional[ModelShape],
               cpu_float32: bool) -> float:
    """Bits per weight of ``quantization`` (see :data:`QUANT_BITS`); ``none`` is the
    config's dtype (float32 where the Transformers engine loads on the CPU)."""
    q = str(quantization or "none").lower()
    if q == "none":
        if cpu_float32:
            return 32.0
        return float(shape.dtype_bits if shape else 16)
    if model_format in ("awq", "gptq") and q.startswith("int"):
        return QUANT_BITS.get(q, 4.25)
    if q in QUANT_BITS:
        return float(QUANT_BITS[q])
    digits = [c for c in q if c.isdigit()]
    return float(digits[0]) + 0.5 if digits else 16.0


def estimate(*, model_name: str, model_format: str, size_in_billions: float,
             size_label: str, quantization: str, context_length: int, engine: str,
             shape: Optional[ModelShape], shape_source: Optional[str] = None,
             weights_file: Optional[str] = None, cpu: bool = False) -> MemoryEstimate:
    """The estimate (see the module doc). ``cpu``: a Transformers load on the CPU
    (float32 weights, cache and activations)."""
    llama = engine == "llama.cpp"
    cpu_float32 = cpu and not llama
    bits = quant_bits(quantization, model_format, shape, cpu_float32)
    if weights_file and os.path.isfile(weights_file):
        weights = float(os.path.getsize(weights_file))
    else:
        params = shape.parameters() if shape else size_in_billions * 1e9
        weights = params * bits / 8
    kv = act = 0.0
    c = int(context_length)
    if shape is not None:
        dtype_bytes = 2.0 if llama else (4.0 if cpu_float32 else shape.dtype_bits / 8)
        kv = shape.kv_bytes_per_token(dtype_bytes) * c
        h, inter = shape.hidden_size, shape.moe_intermediate_size or shape.intermediate_size
        per_token = shape.num_attention_heads * c + 3 * inter + 4 * h
        if llama:
            act = 4.0 * min(512, c) * per_token + 4.0 * shape.vocab_size
        else:
            act = 4.0 * c * (shape.vocab_size + per_token)
    total = weights + kv + act
    return MemoryEstimate(model_name, model_format, size_label, quantization, c, engine,
                          int(weights), int(kv), int(act), int(total), shape_source)


def _local_config(dirs) -> Optional[Path]:
    for d in dirs:
        p = Path(d) / "config.json"
        if p.is_file():
            return p
    return None


def _fetch_config(model_id: str, hub: str) -> Optional[Path]:
    """``config.json`` of ``model_id`` alone, from ``hub`` (None when it fails)."""
    try:
        if hub == "modelscope":
            from modelscope.hub.file_download import model_file_download

            return Path(model_file_download(model_id, "config.json"))
        import huggingface_hub

        return Path(huggingface_hub.hf_hub_download(model_id, "config.json",
                                                     etag_timeout=10))
    except Exception as e:  # offline, gated, missing: the estimate says it has no shape
        logger.info("No config.json for %s from %s: %s", model_id, hub, e)
        return None


def find_shape(family, spec, quantization: str, model_path: Optional[str] = None,
               download: bool = False):
    """``(shape, where it came from, the local GGUF file or None)`` for one spec, looked up
    as the module doc says; ``(None, None, None)`` when nothing is found."""
    from ..cache_manager import cache_dir_for, find_file, package_dir

    gguf_file = None
    if spec.model_format == "ggufv2" and spec.model_file_name_template:
        name = spec.model_file_name_template.format(quantization=quantization)
        places = [Path(model_path)] if model_path else []
        places.append(cache_dir_for(family.model_name, spec.model_format,
                                    str(spec.model_size_in_billions)))
        if spec.package and package_dir(spec.package):
            places.append(package_dir(spec.package))
        for base in places:
            f = base if base.is_file() else (find_file(base, name) if base.is_dir() else None)
            if f is not None:
                gguf_file = str(f)
                try:
                    return ModelShape.from_gguf(gguf_file), f"gguf:{f}", gguf_file
                except Exception as e:  # a file that is no GGUF: keep looking
                    logger.info("Cannot read %s as GGUF: %s", f, e)
    same_size = [s for s in family.model_specs
                 if s.model_size_in_billions == spec.model_size_in_billions]
    dirs = ([model_path] if model_path else []) + [
        cache_dir_for(family.model_name, s.model_format, str(s.model_size_in_billions))
        for s in same_size] + [str(s.model_uri).replace("file://", "")
                               for s in same_size if s.model_uri]
    cfg = _local_config(d for d in dirs if d)
    if cfg is None and download:
        for s in [spec] + same_size:
            if s.model_format != "ggufv2" and s.model_id:
                cfg = _fetch_config(s.model_id, s.model_hub)
                if cfg is not None:
                    break
    if cfg is not None:
        try:
            return ModelShape.from_config(json.loads(cfg.read_text())), f"config:{cfg}", \
                gguf_file
        except (KeyError, ValueError, TypeError) as e:
            logger.info("Cannot read the shape from %s: %s", cfg, e)
    return None, None, gguf_file


def estimate_for_family(family, *, model_format: Optional[str] = None,
                        model_size_in_billions: Any = None, quantization: Optional[str] = None,
                        context_length: Optional[int] = None, model_engine: Optional[str] = None,
                        model_path: Optional[str] = None, download: bool = False,
                        cpu: bool = False) -> MemoryEstimate:
    """The estimate of launching ``family`` with these choices (unset ones as a launch
    picks them, :func:`~.engines.match_spec`); ``context_length`` defaults to the
    family's.

    Raises:
        InvalidRequestError: nothing matches, or a context length that is not a positive
        integer.
    """
    from ...errors import InvalidRequestError
    from .engines import LLM_ENGINES, match_spec

    c = context_length if context_length is not None else family.context_length
    try:
        c = int(c)
    except (TypeError, ValueError):
        c = 0
    if c <= 0:
        raise InvalidRequestError(f"context_length must be a positive integer, got "
                                  f"{context_length!r}")
    try:
        engine, spec, quant = match_spec(family, model_engine, model_format,
                                         model_size_in_billions, quantization)
        engine_name = engine.name
    except InvalidRequestError:
        # an engine missing here does not stop an estimate: pick the spec without it
        if model_engine:
            raise
        spec, quant = _match_without_engine(family, model_format, model_size_in_billions,
                                            quantization)
        engine_name = next((e.name for e in LLM_ENGINES.values()
                            if spec.model_format in e.formats), "Transformers")
    shape, source, gguf_file = find_shape(family, spec, quant, model_path, download)
    return estimate(model_name=family.model_name, model_format=spec.model_format,
                    size_in_billions=spec.size_in_billions,
                    size_label=str(spec.model_size_in_billions), quantization=quant,
                    context_length=c, engine=engine_name, shape=shape, shape_source=source,
                    weights_file=gguf_file, cpu=cpu)


def _match_without_engine(family, model_format, size, quantization):
    from ...errors import InvalidRequestError
    from .llm_family import normalize_size

    size = normalize_size(size)
    for spec in family.model_specs:
        if (model_format and spec.model_format != model_format) or \
                (size and spec.model_size_in_billions != size):
            continue
        quants = [q for q in spec.quantizations
                  if not quantization or q.lower() == str(quantization).lower()]
        if quants:
            return spec, quants[0]
    raise InvalidRequestError(
        f"No spec of model {family.model_name!r} matches format={model_format!r} "
        f"size={size!r} quantization={quantization!r}")
