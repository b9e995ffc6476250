"""What every embedding engine does with a ``POST /v1/embeddings`` request, whatever runs
the model: reading ``input`` (text, token arrays, image items), picking the prompt prefix
(``prompt_name`` / ``prompt`` / ``instruction``), checking ``dimensions`` and
``encoding_format``, decoding images (with the limits of ``model/images.py``), and
building OpenAI's response.

:class:`EmbeddingEngine` is the mixin the sentence-transformers engine and the Transformers
(LLM-based) engine share: an engine supplies ``_embed(kind, items, prefix)`` and gets
``create_embedding``. Imported only in model processes (numpy and PIL are imported lazily).

Request shape of multimodal models (``modalities: ["text", "image"]``, e.g. CLIP), as
upstream Xinference takes it for jina-clip-v2: ``input`` is a list whose items are strings,
``{"text": "..."}`` or ``{"image": "data:image/png;base64,..."}``; each item gets its own
vector, in order, all in one space. Images are sent inline as ``data:`` URIs (the server
does not fetch URLs or read paths for embeddings).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import InvalidRequestError
from ..images import decode_data_image, is_data_uri

MAX_INPUTS = 2048  # as OpenAI: at most 2048 inputs per request
ENCODING_FORMATS = ("float", "base64")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _media_item(x: Any, i: int) -> Tuple[str, Any]:
    """``("text", str)`` or ``("image", str)`` for a ``{"text"}`` / ``{"image"}`` item."""
    keys = [k for k in ("text", "image") if x.get(k) is not None]
    if len(keys) != 1 or set(x) - {"text", "image"}:
        raise InvalidRequestError(
            f"'input[{i}]' must be a string, {{\"text\": ...}} or {{\"image\": ...}} "
            "(one of them per item)")
    kind = keys[0]
    if not isinstance(x[kind], str) or not x[kind]:
        raise InvalidRequestError(f"'input[{i}].{kind}' must be a non-empty string")
    return kind, x[kind]


def parse_embedding_input(input: Any) -> Tuple[str, List[Any]]:
    """Classify OpenAI's ``input``: ``("text", [str, ...])``, ``("ids", [[int, ...], ...])``
    or ``("mixed", [("text"|"image", str), ...])``.

    Accepts a string, a list of strings, one token array (list of ints), a list of token
    arrays, or (multimodal) one ``{"text"|"image": ...}`` object or a list mixing strings
    and such objects.

    Raises:
        InvalidRequestError: empty input, an empty string, more than 2048 inputs, or mixed
        or wrongly typed items (the message names the item).
    """
    if isinstance(input, dict):
        input = [input]
    if isinstance(input, str):
        items, kind = [input], "text"
    elif isinstance(input, (list, tuple)):
        if not input:
            raise InvalidRequestError("'input' must not be an empty list")
        if all(isinstance(x, str) for x in input):
            items, kind = list(input), "text"
        elif all(_is_int(x) for x in input):
            items, kind = [list(input)], "ids"
        elif all(isinstance(x, (list, tuple)) and all(_is_int(t) for t in x) for x in input):
            items, kind = [list(x) for x in input], "ids"
        elif all(isinstance(x, (str, dict)) for x in input):
            items = [("text", x) if isinstance(x, str) else _media_item(x, i)
                     for i, x in enumerate(input)]
            kind = "mixed"
        else:
            raise InvalidRequestError(
                "'input' must be a string, a list of strings, a list of token ids, a list "
                "of token-id lists, or a list of strings and {\"text\"|\"image\": ...} items"
            )
    else:
        raise InvalidRequestError(f"'input' must be a string or a list, got {type(input).__name__}")
    if len(items) > MAX_INPUTS:
        raise InvalidRequestError(f"'input' holds {len(items)} items; at most {MAX_INPUTS}")
    for i, s in enumerate(items):
        text = s if kind == "text" else (s[1] if kind == "mixed" else None)
        if text == "":
            raise InvalidRequestError(
                "'input' must not be an empty string" if len(items) == 1
                else f"'input[{i}]' must not be an empty string")
    return kind, items


def decode_image_item(value: str, where: str):
    """The ``image`` of the embedding item ``where`` (``input[3]``): a
    ``data:image/...;base64,`` URI, decoded as an RGB ``PIL.Image`` under the shared limits
    of :mod:`xinference.model.images`.

    Raises:
        InvalidRequestError: not a data URI (URLs and paths are refused), or see
        :func:`~xinference.model.images.decode_data_image`; the message names
        ``input[3].image``.
    """
    if not is_data_uri(value):
        raise InvalidRequestError(
            f"{where}.image: must be a data:image/...;base64,... URI (this server does not "
            "fetch image URLs or read paths for embeddings)")
    return decode_data_image(value, f"{where}.image")


def encode_vector(vec, encoding_format: str):
    """A float32 vector as OpenAI sends it: base64 of its little-endian float32 bytes
    (``encoding_format="base64"``), else the float32 numpy array itself, which the API
    renders as JSON numbers with orjson (each the shortest text that reads back as the
    same float32, as OpenAI's own responses print them: about half the bytes of float64
    text, and cheaper to build, send and parse than a list of Python floats)."""
    import numpy as np

    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vec, dtype=np.float32)


def l2_normalize(vec):
    """``vec / ||vec||`` (float32 numpy); a zero vector is returned as is."""
    import numpy as np

    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


class EmbeddingEngine:
    """``create_embedding`` for an embedding engine (a mixin over
    :class:`~xinference.model.embedding.engine_utils.BatchedSentenceEngine`).

    An engine sets, when it loads: ``dimensions`` (vector length), ``max_tokens``,
    ``modalities`` (what it embeds: ``("text",)`` or ``("text", "image")``),
    ``_normalized`` (its vectors come out with length 1), ``_model_prompts`` (named
    prefixes the weights define) and ``_vocab_size``; and it implements
    :meth:`_embed`.
    """

    _family: Any
    _model_uid: str
    dimensions: int
    modalities: Tuple[str, ...] = ("text",)
    _normalized: bool = False
    _model_prompts: Dict[str, str] = {}
    _vocab_size: int = 0

    async def _embed(self, kind: str, items: List[Any], prefix: str
                     ) -> List[Tuple[Any, int, bool]]:
        """``(vector, tokens_seen, truncated)`` per item; ``kind`` is ``"text"``,
        ``"ids"`` (token arrays) or ``"image"`` (RGB PIL images); ``prefix`` goes before
        every text."""
        raise NotImplementedError

    # ---- request parts ------------------------------------------------------------
    def prompts(self) -> Dict[str, str]:
        """Named prompts a request may pick: the weights' own, then the family's."""
        return {**(self._model_prompts or {}), **(self._family.prompts or {})}

    def prompt_prefix(self, prompt_name: Optional[str], prompt: Optional[str],
                      instruction: Optional[str]) -> str:
        """The text put before every input text: ``prompt`` as given, the prompt named
        ``prompt_name``, or ``instruction`` placed in the family's
        ``instruction_template``; with none of them, the weights' default prompt (if any).

        Raises:
            InvalidRequestError: more than one of them, an unknown ``prompt_name``, a
            non-string value, or an ``instruction`` for a model without a template.
        """
        given = [n for n, v in (("prompt_name", prompt_name), ("prompt", prompt),
                                ("instruction", instruction)) if v is not None]
        if len(given) > 1:
            raise InvalidRequestError(f"Give at most one of {given}")
        for n, v in (("prompt_name", prompt_name), ("prompt", prompt),
                     ("instruction", instruction)):
            if v is not None and not isinstance(v, str):
                raise InvalidRequestError(f"'{n}' must be a string")
        prompts = self.prompts()
        if prompt is not None:
            return prompt
        if instruction is not None:
            template = self._family.instruction_template
            if not template:
                raise InvalidRequestError(
                    f"Model {self._model_uid!r} takes no 'instruction'; "
                    f"prompt names: {sorted(prompts)}")
            return template.replace("{instruction}", instruction)
        if prompt_name is not None:
            if prompt_name not in prompts:
                raise InvalidRequestError(
                    f"Unknown prompt_name {prompt_name!r}; this model has {sorted(prompts)}")
            return prompts[prompt_name]
        default = getattr(self, "_default_prompt_name", None)
        return prompts.get(default, "") if default else ""

    def check_dimensions(self, dimensions: Any) -> Optional[int]:
        """A request's ``dimensions``: ``None``, the model's size, one of the family's
        ``matryoshka_dimensions`` or (with ``min_dimensions``) any size in between.

        Raises:
            InvalidRequestError: not a positive integer, or a size the model cannot give.
        """
        if dimensions is None:
            return None
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidRequestError(
                f"'dimensions' must be a positive integer, got {dimensions!r}")
        low = self._family.min_dimensions
        if low is not None and low <= dimensions <= self.dimensions:
            return dimensions
        allowed = sorted({self.dimensions, *(self._family.matryoshka_dimensions or [])})
        if dimensions not in allowed:
            span = f"{low}..{self.dimensions}" if low is not None else str(allowed)
            raise InvalidRequestError(
                f"Model {self._model_uid!r} gives {self.dimensions}-dimensional embeddings and "
                f"cannot be shortened to {dimensions}; supported 'dimensions': {span}")
        return dimensions

    async def _embed_mixed(self, items: Sequence[Tuple[str, str]], prefix: str):
        """Embed ``(modality, value)`` items: texts together, images together (decoded
        in a thread first); results in the items' order."""
        out: List[Any] = [None] * len(items)
        texts = [i for i, (k, _) in enumerate(items) if k == "text"]
        images = [i for i, (k, _) in enumerate(items) if k == "image"]
        if images and "image" not in self.modalities:
            raise InvalidRequestError(
                f"'input[{images[0]}]' is an image; model {self._model_uid!r} embeds "
                f"{' and '.join(self.modalities)} only")
        jobs = []
        if texts:
            jobs.append((texts, self._embed("text", [items[i][1] for i in texts], prefix)))
        if images:
            loop = asyncio.get_running_loop()
            decoded = await loop.run_in_executor(
                None, lambda: [decode_image_item(items[i][1], f"input[{i}]") for i in images])
            jobs.append((images, self._embed("image", decoded, "")))
        results = await asyncio.gather(*(j for _, j in jobs))
        for (idx, _), res in zip(jobs, results):
            for i, r in zip(idx, res):
                out[i] = r
        return out

    # ---- the public method (event loop of the model process) ---------------------------
    async def create_embedding(self, input: Any, encoding_format: Optional[str] = None,
                               dimensions: Optional[int] = None,
                               prompt_name: Optional[str] = None,
                               prompt: Optional[str] = None,
                               instruction: Optional[str] = None,
                               **kwargs) -> Dict[str, Any]:
        """OpenAI's create-embeddings (``POST /v1/embeddings``).

        Args:
            input: a string, a list of strings, a token array or a list of token arrays
                (token ids of this model's tokenizer); for multimodal models also
                ``{"text": ...}`` / ``{"image": "data:image/...;base64,..."}`` items.
            encoding_format: ``"float"`` (default) or ``"base64"`` (little-endian float32).
            dimensions: return only the first ``dimensions`` values, re-normalised when the
                model's vectors are normalised (Matryoshka truncation); see
                :meth:`check_dimensions`.
            prompt_name / prompt / instruction: the prefix of every text input (see
                :meth:`prompt_prefix`); Qwen3-Embedding: ``prompt_name="query"`` or
                ``instruction="<task>"`` for queries, nothing for documents.
            kwargs: other OpenAI fields (``user`` ...) are accepted and ignored.

        Returns:
            ``{"object": "list", "model", "data": [{"index", "object": "embedding",
            "embedding"}], "usage": {"prompt_tokens", "total_tokens"[, "truncated_inputs"]}}``;
            token counts are the text tokens the model saw (special tokens and the prompt
            included; images count 0).

        Raises:
            InvalidRequestError: see :func:`parse_embedding_input` and
            :func:`decode_image_item`, an unknown encoding format, prompt name or unsupported
            ``dimensions``, or a token id outside the vocabulary.
        """
        from .engine_utils import check_token_ids

        kind, items = parse_embedding_input(input)
        encoding_format = encoding_format or "float"
        if encoding_format not in ENCODING_FORMATS:
            raise InvalidRequestError(
                f"'encoding_format' must be one of {list(ENCODING_FORMATS)}, "
                f"got {encoding_format!r}")
        dims = self.check_dimensions(dimensions)
        prefix = self.prompt_prefix(prompt_name, prompt, instruction)
        if kind == "ids":
            for i, ids in enumerate(items):
                check_token_ids(ids, self._vocab_size, f"input[{i}]")
            results = await self._embed("ids", items, "")  # prompts apply to text only
        elif kind == "mixed":
            results = await self._embed_mixed(items, prefix)
        else:
            results = await self._embed("text", items, prefix)
        normalized = self._normalized or self._family.normalize
        data, tokens, truncated = [], 0, []
        for i, (vec, n, cut) in enumerate(results):
            if self._family.normalize and not self._normalized:
                vec = l2_normalize(vec)
            if dims is not None and dims < len(vec):
                vec = vec[:dims]
                if normalized:
                    vec = l2_normalize(vec)
            data.append({"index": i, "object": "embedding",
                         "embedding": encode_vector(vec, encoding_format)})
            tokens += n
            if cut:
                truncated.append(i)
        usage: Dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens}
        if truncated:
            usage["truncated_inputs"] = truncated
        return {"object": "list", "model": self._model_uid, "data": data, "usage": usage}
