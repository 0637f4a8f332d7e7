"""file_rules/gguf.py against the ``gguf`` package the worker's loader dequantizes with, and on a
file the package writes."""

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import quants

import file_rules.gguf
from file_rules.gguf import (
    TENSOR_TYPES,
    TOKENS,
    GGUFRefused,
    Skipped,
    read_gguf_header,
    read_gguf_tokens,
)


def test_the_tensor_types_are_those_the_gguf_package_dequantizes() -> None:
    for type_id, (name, block, block_bytes) in TENSOR_TYPES.items():
        kind = gguf.GGMLQuantizationType(type_id)
        assert kind.name == name
        assert gguf.GGML_QUANT_SIZES[kind] == (block, block_bytes)
        blocks = np.zeros(block_bytes * max(1, 256 // block), dtype=np.uint8)
        quants.dequantize(blocks, kind)  # raises NotImplementedError for the types left out
    left_out = {t.value for t in gguf.GGMLQuantizationType} - set(TENSOR_TYPES)
    for type_id in left_out:
        kind = gguf.GGMLQuantizationType(type_id)
        block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
        try:
            quants.dequantize(np.zeros(block_bytes * max(1, 256 // block), np.uint8), kind)
        except NotImplementedError:
            continue
        raise AssertionError(f"{kind.name} dequantizes but is refused")


def test_a_file_the_gguf_package_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_token_list(["a", "b", "c"])
    writer.add_array("numbers", [[1, 2], [3]])
    writer.add_tensor("w", np.zeros((3, 64), dtype=np.float32))
    writer.add_tensor("h", np.zeros((8,), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with path.open("rb") as f:
        header = read_gguf_header(f, path.stat().st_size)
    assert header.metadata["llama.block_count"] == 2
    assert header.metadata["tokenizer.ggml.tokens"] == Skipped("array", 3)
    assert header.metadata["numbers"] == Skipped("array", 2)
    shapes = {t.name: (t.shape, t.type_name, t.nbytes) for t in header.tensors}
    # ggml lists dimensions fastest-varying first.
    assert shapes == {"w": ((64, 3), "F32", 768), "h": ((8,), "F16", 16)}


def _written(path, tokens: list | None, **arrays: list) -> Path:  # type: ignore[no-untyped-def]
    writer = gguf.GGUFWriter(str(path), "llama")
    if tokens is not None:
        writer.add_token_list(tokens)
    for key, values in arrays.items():
        writer.add_array(key, values)
    writer.add_tensor("w", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _tokens(path: Path) -> tuple[str, ...] | None:
    with path.open("rb") as f:
        return read_gguf_tokens(f, path.stat().st_size)


def test_the_vocabulary_is_read_whole_and_other_arrays_skipped(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tokens = ["<s>", "▁the", "é", ""]
    path = _written(tmp_path / "m.gguf", tokens, numbers=[1, 2, 3])
    assert _tokens(path) == tuple(tokens)
    with path.open("rb") as f:
        header = read_gguf_header(f, path.stat().st_size, keep=frozenset({TOKENS}))
    assert header.metadata["numbers"] == Skipped("array", 3)


def test_no_vocabulary_is_none(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert _tokens(_written(tmp_path / "m.gguf", None)) is None


def test_a_vocabulary_that_is_not_strings_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _written(tmp_path / "m.gguf", None, **{TOKENS: [1, 2]})
    with pytest.raises(GGUFRefused, match="not of strings"):
        _tokens(path)


def test_a_vocabulary_beyond_the_bytes_kept_is_refused(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = _written(tmp_path / "m.gguf", ["abcd"] * 10)
    monkeypatch.setattr(file_rules.gguf, "MAX_KEPT_ARRAY_BYTES", 39)
    with pytest.raises(GGUFRefused, match="more than the 39 bytes"):
        _tokens(path)
    monkeypatch.setattr(file_rules.gguf, "MAX_KEPT_ARRAY_BYTES", 40)
    assert _tokens(path) == ("abcd",) * 10
