"""file_rules/gguf.py against the ``gguf`` package the worker's loader dequantizes with, and on a
file the package writes."""

import gguf
import numpy as np
from gguf import quants

from file_rules.gguf import TENSOR_TYPES, Skipped, read_gguf_header


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
