"""What every engine that runs a Hugging Face vision-language checkpoint shares
(Transformers, vLLM): its processor, and the rendering of a chat with images through the
processor's chat template.

* :func:`load_processor`: ``AutoProcessor`` of the model directory. On a CPU-only install
  the PyPI ``torchvision`` wheels are CUDA builds that do not import, so transformers falls
  back to the PIL image processors (``CLIPImageProcessorPil``, ``Qwen2VLImageProcessorPil``
  ...); processors that also want a *video* processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
  GLM-4.1V, SmolVLM2), which needs torchvision, are then built from their image processor
  and tokenizer with no video processor: images work, videos are not offered anyway.
* :func:`is_vision_checkpoint`: whether the weights have a vision part at all.
* :class:`HFVisionMixin`: ``render_images`` (the family's template, else the processor's,
  else the tokenizer's) for an engine that set ``self._processor``.

transformers is imported lazily (this module runs in the model's process).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from ...errors import InvalidRequestError, ModelLoadError
from .params import GenerationParams

logger = logging.getLogger(__name__)


def load_processor(path: str, trust_remote_code: bool = False, image_only: bool = True):
    """The model's processor (see the module doc for the torchvision-less fallback;
    ``image_only=False`` refuses the fallback: an engine that builds the processor again
    its own way, as vLLM does, cannot use it).

    Raises:
        ModelLoadError: no processor can be built from ``path``.
    """
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(
            path, trust_remote_code=trust_remote_code)
    except Exception as first:  # a video processor that needs torchvision, usually
        if not image_only:
            raise ModelLoadError(f"transformers could not build the processor of {path}: "
                                 f"{type(first).__name__}: {first}") from first
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


class HFVisionMixin:
    """The chat-with-images side of an engine that loaded a Hugging Face processor into
    ``self._processor`` (None for a text-only checkpoint). Put it before ``LLM`` (and
    :class:`~.hf_tokenizer.HFTokenizerMixin`) in the bases."""

    _processor: Any = None

    @property
    def supports_images(self) -> bool:
        """True once a checkpoint with a vision part is loaded with its processor."""
        return self._processor is not None

    def render_images(self, messages: List[Dict[str, Any]], params: GenerationParams,
                      tools: Optional[list]) -> str:
        """The prompt text of a chat whose messages hold ``{"type": "image"}`` parts, with
        the model's own image placeholders (``<image>``, ``<|vision_start|><|image_pad|>
        <|vision_end|>`` ...), one per image, not yet expanded to the image's tokens: the
        family's ``chat_template`` when it has one, else the processor's, else the
        tokenizer's (processor templates of LLaVA-style repositories live in
        ``chat_template.json``, not in the tokenizer).

        Raises:
            InvalidRequestError: the template cannot be rendered.
        """
        if self.family.chat_template:
            return self._render(messages, params, tools)
        proc = self._processor
        owner = proc if getattr(proc, "chat_template", None) else proc.tokenizer
        try:
            return owner.apply_chat_template(messages, tools=tools, tokenize=False,
                                             add_generation_prompt=True,
                                             **params.chat_template_kwargs)
        except InvalidRequestError:
            raise
        except Exception as e:  # jinja2 errors, raise_exception() in the template
            raise InvalidRequestError(f"chat template could not be rendered: {e}") from e
