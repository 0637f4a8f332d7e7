"""GGUF teachers at upload: the real SmolLM2-135M file read for its facts, and damaged or hostile
headers refused as unsupported_format before anything is allocated for them."""

import shutil
import struct
from pathlib import Path

import pytest

from app.files.formats import UnsupportedFormat, detect
from tests.helpers.gguf import gguf_bytes, smollm2_gguf
from tests.helpers.gguf import gguf_string as _string

SMOLLM2 = smollm2_gguf()


def _u32(key: str, value: int) -> bytes:
    return _string(key) + struct.pack("<II", 4, value)


def _write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    return path


def test_the_real_smollm2_file() -> None:
    found = detect(SMOLLM2, "teacher")
    assert found.format == "gguf"
    meta = found.meta
    assert meta["task"] == "causal_lm"
    assert meta["architecture"] == "llama"
    assert (meta["num_layers"], meta["vocab_size"], meta["max_positions"]) == (30, 49152, 8192)
    assert 134_000_000 < meta["params"] < 136_000_000
    assert meta["quantization"] == ["Q4_1", "F32", "Q8_0"]  # most used first
    assert meta["has_chat_template"] is True
    assert meta["has_tokenizer"] is True


def test_a_gguf_file_is_not_a_data_set(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="purpose 'teacher'"):
        detect(_write(tmp_path, gguf_bytes()), "dataset")


def test_a_small_file_without_tokenizer(tmp_path: Path) -> None:
    kv = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("qwen2"),
        _u32("qwen2.block_count", 2),
        _u32("qwen2.vocab_size", 100),
    ]
    meta = detect(_write(tmp_path, gguf_bytes(kv, [("w", (64, 2), 1, 256)])), "teacher").meta
    assert (meta["architecture"], meta["num_layers"], meta["vocab_size"]) == ("qwen2", 2, 100)
    assert (meta["params"], meta["quantization"]) == (128, ["F16"])
    assert (meta["has_tokenizer"], meta["has_chat_template"], meta["max_positions"]) == (
        False,
        False,
        None,
    )


@pytest.mark.parametrize("cut", [4, 6, 20, 40, 100, 1_000, 1_000_000, 50_000_000, -1])
def test_the_real_file_cut_short_is_refused(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.gguf"
    with SMOLLM2.open("rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.truncate(SMOLLM2.stat().st_size + cut if cut < 0 else cut)
    with pytest.raises(UnsupportedFormat, match=r"\(truncated\?\)"):
        detect(path, "teacher")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gguf_bytes(version=1), "version 1"),
        (gguf_bytes(tensors=[("w", (32,), 77, 32)]), "ggml type 77, a quantization"),
        (gguf_bytes(tensors=[("w", (32,), 9, 36)]), "ggml type 9"),  # Q8_1: not dequantizable
        (gguf_bytes(tensors=[("w", (33,), 2, 18)]), "not whole Q4_0 blocks"),
        (gguf_bytes(tensors=[("w", (32,), 0, 128), ("w", (32,), 0, 128)]), "appears twice"),
        (gguf_bytes(tensors=[("w", (2**40, 2**20), 0, 32)]), "past the end"),
        # A string that announces more bytes than the file holds.
        (gguf_bytes(kv=[struct.pack("<Q", 2**62) + b"k" + struct.pack("<I", 4)]), "bytes long"),
        (gguf_bytes(kv=[_string("k") + struct.pack("<IQ", 8, 2**60)]), "runs past the end"),
        # Arrays of strings and of numbers announcing more than the file can hold.
        (
            gguf_bytes(kv=[_string("k") + struct.pack("<IIQ", 9, 8, 2**40)]),
            "1099511627776 strings, more than its remaining",
        ),
        (gguf_bytes(kv=[_string("k") + struct.pack("<IIQ", 9, 0, 2**63)]), "runs past the end"),
        (gguf_bytes(kv=[_string("k") + struct.pack("<IIQ", 9, 42, 1)]), "array of unknown type 42"),
        (gguf_bytes(kv=[_string("k") + struct.pack("<I", 13)]), "unknown value type 13"),
        (gguf_bytes(kv=[_u32("k", 1), _u32("k", 2)]), "'k' appears twice"),
        (gguf_bytes(kv=[_u32("general.alignment", 24)]), "not a power of two"),
    ],
)
def test_hostile_headers_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(UnsupportedFormat, match=message):
        detect(_write(tmp_path, content), "teacher")


@pytest.mark.parametrize(("tensors", "keys"), [(2**63, 0), (0, 2**63), (100_001, 0), (5_000, 0)])
def test_huge_counts_are_refused_before_reading_on(tmp_path: Path, tensors: int, keys: int) -> None:
    content = b"GGUF" + struct.pack("<IQQ", 3, tensors, keys) + b"\0" * 64
    with pytest.raises(UnsupportedFormat, match="more than"):
        detect(_write(tmp_path, content), "teacher")


def test_garbage_after_the_magic_is_refused(tmp_path: Path) -> None:
    content = b"GGUF" + bytes(range(256)) * 64
    with pytest.raises(UnsupportedFormat, match="GGUF file cannot be read"):
        detect(_write(tmp_path, content), "teacher")
