"""Vision-language models on the Transformers engine: the model's own processor and model
class, and the encoding of a chat with images into prompt ids plus image tensors.

* :func:`load_processor`: ``AutoProcessor`` of the model directory. On a CPU-only install
  the PyPI ``torchvision`` wheels are CUDA builds that do not import, so transformers falls
  back to the PIL image processors (``CLIPImageProcessorPil``, ``Qwen2VLImageProcessorPil``
  ...); processors that also want a *video* processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
  GLM-4.1V, SmolVLM2), which needs torchvision, are then built from their image processor
  and tokenizer with no video processor: images work, videos are not offered anyway.
* :func:`load_vision_model`: ``AutoModelForImageTextToText`` (LLaVA, Qwen-VL, Gemma 3,
  SmolVLM, InternVL3-hf, GLM-4.1V ...); models that ship only remote code (MiniCPM-V 2.6)
  load with ``AutoModelForCausalLM`` and ``trust_remote_code``.
* :func:`encode_with_processor`: the processor's chat template and ``processor(text=,
  images=)``: the returned ids already hold every image token (so usage counts them in
  ``prompt_tokens``); ``pixel_values`` and the family's extra tensors are the prefill's
  image inputs.

torch and transformers are imported lazily (this module runs in the model's process).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from ....errors import InvalidRequestError, ModelLoadError

logger = logging.getLogger(__name__)

#: processor outputs that are the prompt itself, not image inputs
_TEXT_KEYS = ("input_ids", "attention_mask")


def load_processor(path: str, trust_remote_code: bool = False):
    """The model's processor (see the module doc for the torchvision-less fallback).

    Raises:
        ModelLoadError: no processor can be built from ``path``.
    """
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(
            path, trust_remote_code=trust_remote_code)
    except Exception as first:  # a video processor that needs torchvision, usually
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(
                path, trust_remote_code=trust_remote_code)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                path, trust_remote_code=trust_remote_code)
            cls = _processor_class(path, trust_remote_code)
            kw: Dict[str, Any] = {"image_processor": image_processor, "tokenizer": tokenizer}
            if "video_processor" in getattr(cls, "get_attributes", lambda: [])():
                kw["video_processor"] = None
                cls = _without_video(cls)
            template = getattr(tokenizer, "chat_template", None)
            proc = cls(**kw, chat_template=template) if template else cls(**kw)
            logger.info("processor of %s built without its video processor (%s)", path,
                        first)
            return proc
        except Exception as e:
            raise ModelLoadError(
                f"transformers could not build the processor of {path}: "
                f"{type(first).__name__}: {first}; without its video processor: "
                f"{type(e).__name__}: {e}") from e


def _without_video(cls):
    """A subclass of processor class ``cls`` that takes ``video_processor=None`` (its
    base checks each part's class, and without torchvision the video processor class is a
    placeholder that nothing is an instance of)."""

    class ImageOnlyProcessor(cls):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnlyProcessor.__name__ = ImageOnlyProcessor.__qualname__ = f"{cls.__name__}ImageOnly"
    return ImageOnlyProcessor


def _processor_class(path: str, trust_remote_code: bool):
    import json
    import os

    import transformers

    name = None
    for f in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        p = os.path.join(path, f)
        if os.path.exists(p):
            with open(p) as fh:
                name = json.load(fh).get("processor_class") or name
        if name:
            break
    if not name or not hasattr(transformers, name):
        raise ValueError(f"no processor_class in {path}")
    return getattr(transformers, name)


def is_vision_checkpoint(path: str, trust_remote_code: bool = False) -> bool:
    """True when the checkpoint's config has a vision part (``vision_config`` or a
    ``vision_tower``): a family can list text-only sizes beside vision ones (Gemma 3 1B),
    which load as plain causal LMs."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return any(getattr(config, k, None) is not None
               for k in ("vision_config", "vision_tower", "visual"))


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


def encode_with_processor(processor, messages: List[Dict[str, Any]], images: List[Any],
                          prompt: Optional[str], tools: Optional[list],
                          chat_template_kwargs: Dict[str, Any]
                          ) -> Tuple[str, List[int], Dict[str, Any]]:
    """``(prompt, ids, image inputs)`` of a chat with images; ``prompt`` given (a family
    template rendered it) or rendered here with the processor's template (the tokenizer's
    when the processor has none). ``images`` are :class:`~..images.ImageInput` s in the
    order of the image parts.

    Raises:
        InvalidRequestError: rendering fails, or the processor rejects the images (the
        error names the image parts).
    """
    if prompt is None:
        owner = processor if getattr(processor, "chat_template", None) else processor.tokenizer
        try:
            prompt = owner.apply_chat_template(messages, tools=tools, tokenize=False,
                                               add_generation_prompt=True,
                                               **chat_template_kwargs)
        except Exception as e:
            raise InvalidRequestError(f"chat template could not be rendered: {e}") from e
    try:
        enc = processor(text=[prompt], images=[i.image for i in images], return_tensors="pt")
    except Exception as e:
        where = ", ".join(i.where for i in images)
        raise InvalidRequestError(
            f"the model's processor rejected the images ({where}): {type(e).__name__}: {e}"
        ) from e
    ids = enc["input_ids"][0].tolist()
    mm = {k: v for k, v in enc.items() if k not in _TEXT_KEYS}
    return prompt, ids, mm


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
