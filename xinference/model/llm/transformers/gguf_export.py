"""Export a GGUF file as a Hugging Face ``pytorch`` model directory (for the Transformers
engine), and a cached variant for tests and benchmarks.

transformers loads GGUF with ``from_pretrained(dir, gguf_file=...)`` (needs ``accelerate``
and ``gguf``), dequantizing the weights to float32; the loaded model still carries a GGUF
quantizer marker that ``save_pretrained`` refuses, so it is dropped before saving.

Command line (runs in its own process; torch is only imported there)::

    python -m xinference.model.llm.transformers.gguf_export FILE.gguf OUT_DIR
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Union


def export_gguf(gguf_path: Union[str, Path], out_dir: Union[str, Path]) -> Path:
    """Load ``gguf_path`` with transformers and ``save_pretrained`` model and tokenizer into
    ``out_dir`` (created). Imports torch/transformers: call it in a throwaway process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The tensors are plain dequantized float32 now; without the marker they save as
    # ordinary safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def cached_export(gguf_path: Union[str, Path], cache_root: Union[str, Path, None] = None
                  ) -> Path:
    """The export of ``gguf_path`` under ``cache_root`` (default
    ``$XINFERENCE_TEST_CACHE`` or ``~/.cache/xinference-test``), made once in a subprocess
    and reused while the file (path, size, mtime) and the transformers version stay the
    same. Concurrent callers are safe: each exports to a private directory and renames.

    Raises:
        subprocess.CalledProcessError: the export failed (its stderr is attached).
    """
    import importlib.metadata

    gguf_path = Path(gguf_path).resolve()
    st = gguf_path.stat()
    version = importlib.metadata.version("transformers")
    key = hashlib.sha256(
        f"{gguf_path}:{st.st_size}:{st.st_mtime_ns}:{version}".encode()
    ).hexdigest()[:16]
    root = Path(cache_root or os.environ.get("XINFERENCE_TEST_CACHE")
                or Path.home() / ".cache" / "xinference-test")
    out = root / f"{gguf_path.stem}-pytorch-{key}"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{out.name}.{os.getpid()}"
    subprocess.run([sys.executable, "-m", __name__, str(gguf_path), str(tmp)],
                   check=True, capture_output=True, timeout=900)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":  # pragma: no cover - used through cached_export
    if len(sys.argv) != 3:
        sys.exit("usage: python -m xinference.model.llm.transformers.gguf_export FILE.gguf OUT")
    print(export_gguf(sys.argv[1], sys.argv[2]))
