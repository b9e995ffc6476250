"""OCR on rapidocr-onnxruntime: PaddleOCR's PP-OCRv4 text detection and recognition
models (with the v2 orientation classifier), ONNX files shipped inside the
``rapidocr_onnxruntime`` wheel, run on onnxruntime's CPU provider.

Loaded inside the model's own process. The model directory is the family's resolved path
(the package's ``models`` folder for the builtin ``PP-OCRv4``); a custom OCR model may point
``model_uri`` at a folder holding its own ``*det*.onnx``, ``*rec*.onnx`` and ``*cls*.onnx``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

from ...errors import InvalidRequestError
from .diffusers_engine import load_image


def _pick(folder: Path, key: str) -> Optional[str]:
    found = sorted(p for p in folder.glob("*.onnx") if key in p.name.lower())
    return str(found[0]) if found else None


class RapidOCRModel:
    """An OCR model (``POST /v1/images/ocr``).

    Args:
        model_uid: the running model's uid.
        family: its :class:`~xinference.model.image.family.ImageModelFamily`.
        model_path: folder of the ONNX models.
        n_gpu: accepted for the launch API's sake; this engine runs on the CPU
            (onnxruntime's CPU build).
        det_limit_side_len / det_limit_type: images whose longer side (``"max"``, default)
            exceeds ``det_limit_side_len`` (default 960) are scaled down for detection;
            ``"min"`` scales the shorter side up to it instead (rapidocr's own default,
            736: several times slower on wide text lines).
        text_score: lines recognised with a lower confidence are dropped (default 0.5).
        num_threads: onnxruntime's intra-op threads (default: all cores).
    """

    ABILITIES = {"ocr": "ocr"}

    def __init__(self, model_uid: str, family, model_path: str, *, n_gpu: Any = None,
                 det_limit_side_len: int = 960, det_limit_type: str = "max",
                 text_score: float = 0.5, num_threads: Optional[int] = None):
        if det_limit_type not in ("max", "min"):
            raise InvalidRequestError(
                f"'det_limit_type' must be 'max' or 'min', got {det_limit_type!r}")
        self._model_uid = model_uid
        self._family = family
        self._path = Path(model_path)
        self._options = {"det_limit_side_len": int(det_limit_side_len),
                         "det_limit_type": det_limit_type,
                         "text_score": float(text_score)}
        if num_threads:
            self._options["intra_op_num_threads"] = int(num_threads)
        self._engine = None

    def load(self) -> None:
        """Build the rapidocr pipeline on the model folder's ONNX files (blocking).

        Raises:
            ModelLoadError: the folder lacks a detection or recognition model.
        """
        from ...errors import ModelLoadError
        from rapidocr_onnxruntime import RapidOCR

        paths = {k: _pick(self._path, k) for k in ("det", "rec", "cls")}
        if not paths["det"] or not paths["rec"]:
            raise ModelLoadError(
                f"{self._path} holds no '*det*.onnx' and '*rec*.onnx' OCR models")
        opts = dict(self._options, det_model_path=paths["det"], rec_model_path=paths["rec"])
        if paths["cls"]:
            opts["cls_model_path"] = paths["cls"]
        self._engine = RapidOCR(**opts)

    def ocr(self, image: bytes, *, progress=None, cancel=None, **kwargs) -> Dict[str, Any]:
        """Recognise the text in ``image`` (encoded bytes).

        Options: ``text_score`` (drop lines below this confidence), ``box_thresh``,
        ``unclip_ratio`` (detection post-processing), as rapidocr takes them.

        Returns:
            ``{"created", "text": the lines joined by newlines, "data": [{"text", "box":
            [[x, y] x 4] (clockwise from top-left, in the input's pixels), "score"}]}``,
            lines in reading order.

        Raises:
            InvalidRequestError: not an image, or an unknown option.
        """
        import numpy as np

        bad = sorted(set(kwargs) - {"text_score", "box_thresh", "unclip_ratio"})
        if bad:
            raise InvalidRequestError(
                f"Unknown OCR option(s) {bad}; known: ['box_thresh', 'text_score', "
                "'unclip_ratio']")
        img = load_image(image, "image").convert("RGB")
        if progress is not None:
            progress.update(0, 1)
        # rapidocr keeps these on the engine between calls: pass all three every time.
        call_opts = {"text_score": self._options["text_score"], "box_thresh": 0.5,
                     "unclip_ratio": 1.6}
        for k, v in kwargs.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise InvalidRequestError(f"'{k}' must be a non-negative number, got {v!r}")
            call_opts[k] = float(v)
        result, _ = self._engine(np.asarray(img)[:, :, ::-1].copy(), **call_opts)
        data = [{"text": text, "box": [[float(x), float(y)] for x, y in box],
                 "score": float(score)} for box, text, score in (result or [])]
        if progress is not None:
            progress.finish()
        return {"created": int(time.time()), "text": "\n".join(d["text"] for d in data),
                "data": data}
