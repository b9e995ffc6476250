"""Text-to-video on diffusers pipelines (CogVideoX, Wan, TextToVideoSD ...), encoded to
MP4 (H.264) with PyAV. Shares loading, option checks, seeds, progress and cancellation
with the image engine (:class:`~xinference.model.image.diffusers_engine.DiffusersEngine`).
"""

from __future__ import annotations

import io
import time
from typing import Any, Dict, List, Optional

from ...errors import InvalidRequestError
from ..image.diffusers_engine import DiffusersEngine
from ..image.params import MAX_NUM_FRAMES, check_bounded_int, check_n

DEFAULT_FPS = 8


def frames_to_uint8(frames):
    """One video's frames as a ``(F, H, W, 3)`` uint8 array, from what a pipeline returns
    with ``output_type="np"`` (floats in 0..1) or a list of PIL images."""
    import numpy as np

    if isinstance(frames, (list, tuple)) and frames and hasattr(frames[0], "convert"):
        return np.stack([np.asarray(f.convert("RGB")) for f in frames])
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
    return arr


def encode_mp4(frames, fps: float) -> bytes:
    """``(F, H, W, 3)`` uint8 frames as an H.264 MP4 (yuv420p; odd sides are cropped by
    one pixel, as yuv420p needs even ones)."""
    import av

    f, h, w = frames.shape[:3]
    h2, w2 = h - h % 2, w - w % 2
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(frame[:h2, :w2], format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


class DiffusersVideoModel(DiffusersEngine):
    """A diffusers text-to-video pipeline (loaded with ``DiffusionPipeline``: the class
    named in the directory's ``model_index.json``)."""

    ABILITIES = {"text2video": "text_to_video"}

    def load(self) -> None:
        """Load the pipeline (blocking)."""
        self._pipe = self._load_pipeline("DiffusionPipeline")

    def text_to_video(self, prompt: str, n: int = 1, size: Optional[str] = None,
                      negative_prompt: Optional[str] = None, fps: Any = None, *,
                      progress=None, cancel=None, **kwargs) -> Dict[str, Any]:
        """Generate ``n`` videos for ``prompt`` (one after the other, seeds ``seed``,
        ``seed + 1`` ...). ``size`` ``"W*H"``; ``fps`` of the MP4 (default: the family's
        or 8); options: ``seed``, ``num_frames``, ``num_inference_steps``,
        ``guidance_scale`` and the pipeline's other parameters.

        Returns:
            ``{"created", "data": [MP4 bytes, ...]}``.

        Raises:
            InvalidRequestError: no ``text2video`` ability, an empty prompt, bad ``n``,
            ``size``, ``fps`` or an unknown option.
        """
        self._check_ability("text2video")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequestError("'prompt' must be a non-empty string")
        pipe = self._pipe
        n = check_n(n)
        wh = self._check_size(size, pipe)
        fps = fps if fps is not None else self._family.default_generate_config.get(
            "fps", DEFAULT_FPS)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 120:
            raise InvalidRequestError(f"'fps' must be a number in (0, 120], got {fps!r}")
        seed = kwargs.pop("seed", None)
        args = self._options(pipe, kwargs)
        check_bounded_int("num_frames", args.get("num_frames"), MAX_NUM_FRAMES)
        args.update(prompt=prompt, output_type="np")
        if negative_prompt is not None:
            args["negative_prompt"] = negative_prompt
        if wh is not None:
            args.update(width=wh[0], height=wh[1])
        gens = self._generators(seed, n)
        videos: List[bytes] = []
        for i in range(n):
            if gens is not None:
                args["generator"] = gens[i]
            out = self._run(pipe, args, progress, cancel, part=(i, n))
            frames = out.frames[0] if len(getattr(out.frames, "shape", ())) == 5 or \
                isinstance(out.frames, list) else out.frames
            videos.append(encode_mp4(frames_to_uint8(frames), fps))
        if progress is not None:
            progress.finish()
        return {"created": int(time.time()), "data": videos}
