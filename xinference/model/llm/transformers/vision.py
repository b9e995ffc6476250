"""Vision-language models on the Transformers engine: the model class, and the encoding
of a rendered chat with images into prompt ids plus image tensors (the processor itself and
the rendering are shared with vLLM: :mod:`~xinference.model.llm.hf_processor`).

* :func:`load_vision_model`: ``AutoModelForImageTextToText`` (LLaVA, Qwen-VL, Gemma 3,
  SmolVLM, InternVL3-hf, GLM-4.1V ...); models that ship only remote code (MiniCPM-V 2.6)
  load with ``AutoModelForCausalLM`` and ``trust_remote_code``.
* :func:`encode_with_processor`: ``processor(text=, images=)``: the returned ids already
  hold every image token (so usage counts them in ``prompt_tokens``); ``pixel_values`` and
  the family's extra tensors are the prefill's image inputs.

torch and transformers are imported lazily (this module runs in the model's process).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

from ....errors import InvalidRequestError

logger = logging.getLogger(__name__)

#: processor outputs that are the prompt itself, not image inputs
_TEXT_KEYS = ("input_ids", "attention_mask")


def load_vision_model(path: str, kw: Dict[str, Any]):
    """The model with its vision tower: ``AutoModelForImageTextToText``, else (remote-code
    models) ``AutoModelForCausalLM``."""
    import transformers

    try:
        return transformers.AutoModelForImageTextToText.from_pretrained(path, **kw)
    except ValueError:  # "Unrecognized configuration class": a remote-code family
        if not kw.get("trust_remote_code"):
            raise
        return transformers.AutoModelForCausalLM.from_pretrained(path, **kw)


def encode_with_processor(processor, prompt: str, images: List[Any]
                          ) -> Tuple[List[int], Dict[str, Any]]:
    """``(ids, image inputs)`` of a rendered chat ``prompt`` (one placeholder per image,
    :meth:`~..hf_processor.HFVisionMixin.render_images`) and its ``images``
    (:class:`~..images.ImageInput` s in the order of the image parts).

    Raises:
        InvalidRequestError: the processor rejects the images (the error names the image
        parts).
    """
    try:
        enc = processor(text=[prompt], images=[i.image for i in images], return_tensors="pt")
    except Exception as e:
        where = ", ".join(i.where for i in images)
        raise InvalidRequestError(
            f"the model's processor rejected the images ({where}): {type(e).__name__}: {e}"
        ) from e
    ids = enc["input_ids"][0].tolist()
    mm = {k: v for k, v in enc.items() if k not in _TEXT_KEYS}
    return ids, mm


def forward_inputs(model) -> set:
    """The argument names of the model's ``forward``: a processor's extras
    (``token_type_ids``, ``mm_token_type_ids`` ...) reach the forward only when it names
    them."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return set(params)


def rope_index_fn(model):
    """The model's multimodal RoPE position function (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
    GLM-4.1V: ``get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, ...) ->
    (position_ids (3, 1, L), deltas (1,))``), or None for models with 1-D positions."""
    for owner in (model, getattr(model, "model", None)):
        fn = getattr(owner, "get_rope_index", None)
        if callable(fn):
            return fn
    return None
