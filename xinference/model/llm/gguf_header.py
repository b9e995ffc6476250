"""The metadata of a GGUF file's header, read without its arrays' contents.

The launch planner's memory estimate needs a dozen numbers from the header
(``{arch}.block_count`` ... and the vocabulary size). The ``gguf`` package's
``GGUFReader`` builds a numpy view of every element of every array on open, the
tokenizer's tokens and merges included: about a million views for a 49k-token vocabulary,
1.6 s on an idle core of the 2-core test machine and 3 s under load, which was most of a
launch of SmolLM2. This reader walks the key/value section as the GGUF specification lays
it out (ggml ``docs/gguf.md``: magic ``GGUF``, version, tensor count, key/value count, then
each pair as a length-prefixed UTF-8 key, a ``uint32`` type and the value) and keeps
scalars, strings and arrays of numbers; of an array of strings (the vocabulary, the merges)
it keeps the element count only and skips the elements by their length prefixes. Versions
2 and 3, either byte order, as ``GGUFReader``.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any, Dict

# GGUF value types (gguf.md: enum gguf_metadata_value_type) -> struct format
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
            11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAGIC = b"GGUF"


class SkippedStrings:
    """What is kept of an array of strings: ``len()`` gives its element count."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"SkippedStrings({self.count})"


def read_gguf_metadata(path: str) -> Dict[str, Any]:
    """``{key: value}`` of the header of the GGUF file at ``path``: numbers and booleans as
    Python values, strings decoded (UTF-8, undecodable bytes replaced), arrays of numbers as
    lists, arrays of strings as :class:`SkippedStrings` (their length only).

    Raises:
        ValueError: not a GGUF file, an unsupported version (only 2 and 3), or a header
            that ends early or holds an unknown value type.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        try:
            return _parse(m)
        except struct.error as e:  # read past the end of the file
            raise ValueError(f"{path}: truncated GGUF header ({e})") from None


def _parse(m) -> Dict[str, Any]:
    if m[:4] != _MAGIC:
        raise ValueError("not a GGUF file (bad magic)")
    order = "<"
    version = struct.unpack_from("<I", m, 4)[0]
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        order, version = ">", struct.unpack_from(">I", m, 4)[0]
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
    u32, u64 = struct.Struct(order + "I"), struct.Struct(order + "Q")
    n_kv = struct.unpack_from(order + "QQ", m, 8)[1]
    off = 24

    def string(off: int):
        n = u64.unpack_from(m, off)[0]
        end = off + 8 + n
        if end > len(m):
            raise ValueError("truncated GGUF header (a string runs past the end)")
        return bytes(m[off + 8:end]).decode("utf-8", "replace"), end

    out: Dict[str, Any] = {}
    for _ in range(n_kv):
        key, off = string(off)
        vtype = u32.unpack_from(m, off)[0]
        off += 4
        if vtype == _ARRAY:
            etype, count = struct.unpack_from(order + "IQ", m, off)
            off += 12
            if etype == _STRING:
                for _ in range(count):
                    off += 8 + u64.unpack_from(m, off)[0]
                out[key] = SkippedStrings(count)
            elif etype in _SCALARS:
                fmt = struct.Struct(f"{order}{count}{_SCALARS[etype]}")
                out[key] = list(fmt.unpack_from(m, off))
                off += fmt.size
            else:  # nested arrays: not written by llama.cpp's converters
                raise ValueError(f"GGUF key {key!r}: arrays of type {etype} are not read")
        elif vtype == _STRING:
            out[key], off = string(off)
        elif vtype in _SCALARS:
            fmt = struct.Struct(order + _SCALARS[vtype])
            out[key] = fmt.unpack_from(m, off)[0]
            off += fmt.size
        else:
            raise ValueError(f"GGUF key {key!r}: unknown value type {vtype}")
    if off > len(m):
        raise ValueError("truncated GGUF header")
    return out
