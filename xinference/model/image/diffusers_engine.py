"""Image and video generation on diffusers pipelines.

Loaded inside the model's own process by :class:`~xinference.model.image.launch.
MediaModelLoader`. :class:`DiffusersEngine` holds what image and video share: loading a
pipeline on the CPU or a GPU (float16 there by default; optional CPU offload), checking a
request's options against the pipeline's own parameters, seeded generators, and a step
callback that reports progress and stops the generation at the next step once its client
went away. :class:`DiffusersImageModel` adds text-to-image, image-to-image and inpainting
(diffusers' AutoPipelines; the second and third share the first one's weights).

Methods are plain (blocking): the ModelActor runs them one at a time in its engine thread
and passes ``cancel`` (a ``threading.Event``) and ``progress`` (a
:class:`~xinference.model.progress.RequestProgress`).
"""

from __future__ import annotations

import inspect
import io
import logging
import time
from typing import Any, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..embedding.engine_utils import pick_device, prepare_torch_env
from .params import (
    MAX_INFERENCE_STEPS,
    MAX_INPUT_PIXELS,
    check_bounded_int,
    check_n,
    check_pixels,
    parse_size,
)

logger = logging.getLogger(__name__)

#: pipeline parameters a request may not set through ``kwargs``: the engine sets them
#: (from ``n``, ``size``, uploads, ``seed``) or they take tensors, which JSON cannot carry
RESERVED_PARAMS = frozenset({
    "prompt", "negative_prompt", "image", "mask_image", "height", "width",
    "num_images_per_prompt", "num_videos_per_prompt", "generator", "latents",
    "masked_image_latents", "prompt_embeds", "negative_prompt_embeds",
    "pooled_prompt_embeds", "negative_pooled_prompt_embeds", "ip_adapter_image",
    "ip_adapter_image_embeds", "negative_ip_adapter_image",
    "negative_ip_adapter_image_embeds", "output_type", "return_dict", "callback",
    "callback_steps", "callback_on_step_end", "callback_on_step_end_tensor_inputs",
})


class GenerationCancelled(Exception):
    """Raised from the step callback to stop a generation whose client went away."""


def load_image(data: Any, what: str = "image"):
    """Decode uploaded bytes into a PIL image (fully read).

    Raises:
        InvalidRequestError: empty, or not an image PIL can read (naming ``what``).
    """
    from PIL import Image

    if not data:
        raise InvalidRequestError(f"'{what}' is empty")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Exception as e:
        raise InvalidRequestError(f"'{what}' is not an image this server can read "
                                  f"({type(e).__name__}: {e})") from None
    check_pixels(img.size, f"'{what}'", MAX_INPUT_PIXELS)  # before decoding
    try:
        img.load()
    except Exception as e:
        raise InvalidRequestError(f"'{what}' is not an image this server can read "
                                  f"({type(e).__name__}: {e})") from None
    return img


def mask_to_l(mask):
    """An inpainting mask as a grayscale image, white = repaint. A mask with transparency
    follows OpenAI's edits convention (the fully transparent pixels are edited); an opaque
    one is read as grayscale (white = repaint, diffusers' convention)."""
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in
                                              mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        return alpha.point(lambda a: 255 if a == 0 else 0)
    return mask.convert("L")


def encode_png(img) -> bytes:
    """A PIL image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class DiffusersEngine:
    """What the diffusers image and video engines share.

    Args:
        model_uid: the running model's uid.
        family: its :class:`~xinference.model.image.family.DiffusionFamilyBase`
            (abilities, default generation options, allowed sizes).
        model_path: local diffusers directory (``model_index.json`` and components).
        n_gpu: ``0`` forces the CPU; otherwise a GPU is used when one is visible.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... (wins over ``n_gpu``).
        torch_dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"``; default float16 on
            a GPU, float32 on the CPU (half precision is slow or unsupported there).
        cpu_offload: diffusers' ``enable_model_cpu_offload`` (GPU only: whole components
            move to the GPU when used).
        sequential_cpu_offload: ``enable_sequential_cpu_offload`` (GPU only: layer by
            layer; least memory, slowest).
        torch_threads: torch's intra-op threads on the CPU (default: torch's choice).
    """

    #: ability -> public method, for error messages
    ABILITIES: Dict[str, str] = {}

    def __init__(self, model_uid: str, family, model_path: str, *, n_gpu: Any = None,
                 device: Optional[str] = None, torch_dtype: Optional[str] = None,
                 cpu_offload: bool = False, sequential_cpu_offload: bool = False,
                 torch_threads: Optional[int] = None):
        self._model_uid = model_uid
        self._family = family
        self._model_path = model_path
        self._n_gpu, self._device_arg = n_gpu, device
        self._dtype_name = torch_dtype
        self._cpu_offload = bool(cpu_offload)
        self._sequential_offload = bool(sequential_cpu_offload)
        self._torch_threads = torch_threads
        self._abilities = list(family.model_ability)
        self.device = "cpu"

    # ---- loading (engine thread) --------------------------------------------------------
    def _load_pipeline(self, auto_class: str):
        """``diffusers.<auto_class>.from_pretrained(model_path)`` on the chosen device and
        dtype, progress bars off."""
        prepare_torch_env()
        import torch
        import diffusers

        self.device = pick_device(self._device_arg, self._n_gpu)
        on_gpu = not self.device.startswith("cpu")
        if not on_gpu and self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        dtype = getattr(torch, self._dtype_name or ("float16" if on_gpu else "float32"))
        diffusers.utils.logging.disable_progress_bar()  # bars garble the server log
        import transformers

        transformers.utils.logging.disable_progress_bar()
        # diffusers renamed from_pretrained's torch_dtype to dtype (the old name warns).
        from diffusers.utils import deprecation_utils

        key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
        pipe = getattr(diffusers, auto_class).from_pretrained(self._model_path,
                                                              **{key: dtype})
        if on_gpu and self._sequential_offload:
            pipe.enable_sequential_cpu_offload(device=self.device)
        elif on_gpu and self._cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        logger.info("%s: %s on %s (%s)", self._model_uid, type(pipe).__name__, self.device,
                    dtype)
        return pipe

    # ---- request checks -----------------------------------------------------------------
    def _check_ability(self, ability: str) -> None:
        if ability not in self._abilities:
            raise InvalidRequestError(
                f"Model {self._model_uid!r} cannot do {ability}; its abilities are "
                f"{self._abilities}")

    def _check_size(self, size: Any, pipe) -> Optional[Tuple[int, int]]:
        """``size`` parsed (see :func:`parse_size`) and checked against the family's
        ``min_image_size`` .. ``max_image_size`` and the pipeline's multiple (8 for
        Stable Diffusion: the VAE's scale factor)."""
        wh = parse_size(size)
        if wh is None:
            return None
        lo, hi = self._family.min_image_size, self._family.max_image_size
        multiple = max(8, int(getattr(pipe, "vae_scale_factor", 8) or 8))
        for side in wh:
            if not lo <= side <= hi:
                raise InvalidRequestError(
                    f"'size' {size!r} is out of range for model {self._model_uid!r}: each "
                    f"side must lie in {lo}..{hi} pixels")
            if side % multiple:
                raise InvalidRequestError(
                    f"'size' {size!r}: each side must be a multiple of {multiple} for "
                    f"model {self._model_uid!r}")
        return wh

    def _options(self, pipe, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        """The family's ``default_generate_config`` overridden by the request's options,
        each checked to be a parameter of this pipeline (``seed`` and engine-specific
        names are taken out before).

        Raises:
            InvalidRequestError: an option the pipeline does not take, naming those it does.
        """
        params = inspect.signature(type(pipe).__call__).parameters
        known = {n for n, p in params.items()
                 if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        allowed = known - RESERVED_PARAMS
        merged = {k: v for k, v in self._family.default_generate_config.items()
                  if k in allowed}
        merged.update({k: v for k, v in kwargs.items() if v is not None})
        bad = sorted(k for k in merged if k not in allowed)
        if bad:
            raise InvalidRequestError(
                f"Unknown option(s) {bad} for model {self._model_uid!r} "
                f"({type(pipe).__name__}); it takes {sorted(allowed)}")
        check_bounded_int("num_inference_steps", merged.get("num_inference_steps"),
                          MAX_INFERENCE_STEPS)
        return merged

    def _generators(self, seed: Any, n: int):
        """``n`` torch generators seeded ``seed``, ``seed + 1`` ... (None without a seed):
        the same seed gives the same images, and the images of one request differ."""
        if seed is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidRequestError(f"'seed' must be an integer, got {seed!r}")
        import torch

        dev = "cpu" if self._cpu_offload or self._sequential_offload else self.device
        return [torch.Generator(dev).manual_seed(seed + i) for i in range(n)]

    # ---- running (engine thread) --------------------------------------------------------
    def _run(self, pipe, args: Dict[str, Any], progress=None, cancel=None,
             part: Tuple[int, int] = (0, 1)):
        """Call ``pipe(**args)`` with a step callback that reports progress (``part`` =
        this call's index and how many calls the request makes) and raises
        :class:`GenerationCancelled` at the next step once ``cancel`` is set.

        Raises:
            InvalidRequestError: the pipeline refused the arguments (its ValueError).
            GenerationCancelled: ``cancel`` was set.
        """
        index, parts = part
        steps = int(args.get("num_inference_steps") or 50)

        def step(i: int, total: Optional[int]) -> None:
            if cancel is not None and cancel.is_set():
                if progress is not None:
                    progress.finish("cancelled")
                logger.info("%s: request cancelled by its client after %d steps",
                            self._model_uid, i + 1)
                raise GenerationCancelled(f"request cancelled after {i + 1} steps")
            if progress is not None:
                progress.update(index + (i + 1) / max(total or steps, 1), parts)

        params = inspect.signature(type(pipe).__call__).parameters
        args = dict(args)
        if "callback_on_step_end" in params:
            def on_step_end(p, i, t, kw):
                step(i, getattr(p, "num_timesteps", None))
                return kw
            args["callback_on_step_end"] = on_step_end
        elif "callback" in params:  # older pipelines (TextToVideoSD)
            args["callback"] = lambda i, t, latents: step(i, None)
            args["callback_steps"] = 1
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("request cancelled before it started")
        if progress is not None:
            progress.update(index, parts)
        try:
            return pipe(**args)
        except (GenerationCancelled, InvalidRequestError):
            raise
        except (ValueError, TypeError) as e:
            raise InvalidRequestError(f"{type(pipe).__name__} refused the request: {e}") \
                from None


class DiffusersImageModel(DiffusersEngine):
    """Text-to-image, image-to-image and inpainting with diffusers' AutoPipelines (Stable
    Diffusion 1.x/2.x/XL/3.x, FLUX ...). The first pipeline loaded is the one for the
    family's first ability; the others are derived from it with ``from_pipe`` when first
    used (sharing the weights).

    Every method returns ``{"created": unix seconds, "data": [PNG bytes, ...]}``; the
    gateway turns the bytes into ``url`` or ``b64_json`` items.
    """

    ABILITIES = {"text2image": "text_to_image", "image2image": "image_to_image",
                 "inpainting": "inpainting"}
    _AUTO = {"text2image": "AutoPipelineForText2Image",
             "image2image": "AutoPipelineForImage2Image",
             "inpainting": "AutoPipelineForInpainting"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pipes: Dict[str, Any] = {}

    def load(self) -> None:
        """Load the pipeline of the family's first ability (blocking)."""
        first = next((a for a in self._abilities if a in self._AUTO), None)
        if first is None:
            raise InvalidRequestError(
                f"Model {self._model_uid!r} has no diffusers ability ({self._abilities})")
        self._pipes[first] = self._load_pipeline(self._AUTO[first])

    def _pipe(self, ability: str):
        self._check_ability(ability)
        if ability not in self._pipes:
            import diffusers

            base = next(iter(self._pipes.values()))
            self._pipes[ability] = getattr(diffusers, self._AUTO[ability]).from_pipe(base)
            self._pipes[ability].set_progress_bar_config(disable=True)
        return self._pipes[ability]

    def _generate(self, ability: str, prompt: Optional[str], n: Any, size: Any,
                  negative_prompt: Optional[str], kwargs: Dict[str, Any], progress, cancel,
                  image=None, mask_image=None, target: Optional[Tuple[int, int]] = None):
        pipe = self._pipe(ability)
        n = check_n(n)
        wh = self._check_size(size, pipe)
        seed = kwargs.pop("seed", None)
        args = self._options(pipe, kwargs)
        args.update(prompt=prompt or "", num_images_per_prompt=n)
        if negative_prompt is not None:
            args["negative_prompt"] = negative_prompt
        gens = self._generators(seed, n)
        if gens is not None:
            args["generator"] = gens
        if image is not None:
            if wh is not None and image.size != wh:
                image = image.resize(wh)
                mask_image = mask_image.resize(wh) if mask_image is not None else None
            args["image"] = image
            target = image.size
        if mask_image is not None:
            args["mask_image"] = mask_image
        if ability != "image2image":  # image2image takes its size from the image
            w, h = wh or target or (None, None)
            if w is not None:
                # The pipeline works at multiples of its VAE factor; the result is resized
                # back to the asked size below.
                m = max(8, int(getattr(pipe, "vae_scale_factor", 8) or 8))
                args.update(width=max(m, w // m * m), height=max(m, h // m * m))
        out = self._run(pipe, args, progress, cancel)
        want = wh or target
        images = [im if want is None or im.size == want else im.resize(want)
                  for im in out.images]
        if progress is not None:
            progress.finish()
        return {"created": int(time.time()), "data": [encode_png(im) for im in images]}

    def text_to_image(self, prompt: str, n: int = 1, size: Optional[str] = None,
                      negative_prompt: Optional[str] = None, *, progress=None, cancel=None,
                      **kwargs) -> Dict[str, Any]:
        """Generate ``n`` images of ``size`` (``"W*H"``; default: the model's) for
        ``prompt``. Options: ``seed`` (the same seed gives the same pixels) and any
        parameter of the pipeline (``num_inference_steps``, ``guidance_scale`` ...).

        Raises:
            InvalidRequestError: no ``text2image`` ability, bad ``n`` / ``size``, an
            unknown option.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError("'prompt' must be a non-empty string")
        return self._generate("text2image", prompt, n, size, negative_prompt, kwargs,
                              progress, cancel)

    def image_to_image(self, image: bytes, prompt: Optional[str] = None, n: int = 1,
                       size: Optional[str] = None, negative_prompt: Optional[str] = None, *,
                       progress=None, cancel=None, **kwargs) -> Dict[str, Any]:
        """Variations of ``image`` (encoded bytes) guided by ``prompt``; the results have
        the input's size unless ``size`` is given. Options as :meth:`text_to_image` plus
        ``strength`` (0..1, how far from the input).

        Raises:
            InvalidRequestError: no ``image2image`` ability, not an image, bad options.
        """
        self._check_ability("image2image")
        img = load_image(image, "image").convert("RGB")
        if parse_size(size) is None:  # the output takes the input's size
            check_pixels(img.size, "'image' (the output size without 'size')")
        return self._generate("image2image", prompt, n, size, negative_prompt, kwargs,
                              progress, cancel, image=img)

    def inpainting(self, image: bytes, mask_image: bytes, prompt: Optional[str] = None,
                   n: int = 1, size: Optional[str] = None,
                   negative_prompt: Optional[str] = None, *, progress=None, cancel=None,
                   **kwargs) -> Dict[str, Any]:
        """Repaint the white part of ``mask_image`` in ``image`` (both encoded bytes, of
        the same size; a mask with transparency: its transparent part, see
        :func:`mask_to_l`); results have the input's size unless ``size`` is given.

        Raises:
            InvalidRequestError: no ``inpainting`` ability, an upload that is not an image,
            a mask whose size differs from the image's, bad options.
        """
        self._check_ability("inpainting")
        img = load_image(image, "image").convert("RGB")
        if parse_size(size) is None:  # the output takes the input's size
            check_pixels(img.size, "'image' (the output size without 'size')")
        mask = load_image(mask_image, "mask_image")
        if mask.size != img.size:
            raise InvalidRequestError(
                f"'mask_image' is {mask.size[0]}x{mask.size[1]} but 'image' is "
                f"{img.size[0]}x{img.size[1]}; they must have the same size")
        return self._generate("inpainting", prompt, n, size, negative_prompt, kwargs,
                              progress, cancel, image=img, mask_image=mask_to_l(mask))
