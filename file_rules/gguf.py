"""GGUF (llama.cpp) files: the header read by a bounded parser that trusts nothing it announces.

The ``gguf`` package's reader is not used here: it memory-maps the whole file and builds an array
for every field and tensor before anyone can look at the counts, which a hostile header can make
huge. This reader checks every count and length against the bytes left in the file before it
allocates or loops, keeps only scalar values (long strings and arrays are skipped, their length
kept), and refuses a tensor type that the ``gguf`` package cannot dequantize, which is what the
worker's loader (transformers, ``gguf_file=``) runs. The API's upload check (app/files/formats/
gguf.py) and the worker apply the same reader.

Standard library only (see file_rules/__init__.py).
"""

import struct
from dataclasses import dataclass, field
from typing import BinaryIO

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_METADATA_KEYS = 10_000
MAX_TENSORS = 100_000
MAX_KEY_BYTES = 65_535  # the GGUF specification's bound on a key
MAX_KEPT_STRING_BYTES = 64 * 1024  # longer string values are skipped; their presence is kept
MAX_ARRAY_STRINGS = 4_000_000  # every string in every array, together (vocabularies, merges)
MAX_KEPT_ARRAY_BYTES = 64 * 1024 * 1024  # the strings of one array kept in memory (a vocabulary)
TOKENS = "tokenizer.ggml.tokens"  # the vocabulary: token strings by id
MAX_DIMS = 4  # ggml tensors have at most 4 dimensions
DEFAULT_ALIGNMENT = 32

# The ggml tensor types the ``gguf`` package dequantizes: id -> (name, elements per block, bytes
# per block). tests/file_rules/test_gguf.py holds this table to the installed package.
# fmt: off
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
}
# Metadata value types: id -> struct format of a scalar (8: string, 9: array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
# fmt: on
_STRING, _ARRAY = 8, 9


class GGUFRefused(ValueError):
    """Not a GGUF file this service can load; the message says where and why."""


class UnknownTensorType(GGUFRefused):
    """A tensor of a ggml type that cannot be dequantized: the file may be whole, its
    quantization is what is not served."""

    def __init__(self, message: str, type_id: int):
        super().__init__(message)
        self.type_id = type_id


@dataclass(frozen=True)
class Skipped:
    """A value not kept in memory: a long string or an array, with its length."""

    kind: str  # "string" or "array"
    length: int


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int  # from the start of the data section
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, object] = field(default_factory=dict)
    tensors: list[GGUFTensor] = field(default_factory=list)


def read_gguf_header(f: BinaryIO, size: int, keep: frozenset[str] = frozenset()) -> GGUFHeader:
    """Parse and check the header of the GGUF file ``f`` of ``size`` bytes, data never read.
    Arrays of strings under the keys in ``keep`` are kept whole, as tuples; others are skipped."""
    reader = _Reader(f, size, keep)
    if reader.raw(4) != MAGIC:
        raise GGUFRefused("it does not start with the GGUF magic")
    version = reader.scalar("<I")
    if version not in VERSIONS:
        raise GGUFRefused(f"it is GGUF version {version}; versions 2 and 3 are read")
    tensor_count, key_count = reader.scalar("<Q"), reader.scalar("<Q")
    _bounded(key_count, MAX_METADATA_KEYS, "metadata keys")
    _bounded(tensor_count, MAX_TENSORS, "tensors")
    # A key takes at least 12 bytes (its length and type), a tensor's description at least 32.
    if 12 * key_count + 32 * tensor_count > size - reader.position:
        raise GGUFRefused(
            f"it announces {key_count} metadata keys and {tensor_count} tensors, more than its "
            f"{size} bytes can describe (truncated?)"
        )
    header = GGUFHeader(int(version))
    for _ in range(key_count):
        key = reader.string(MAX_KEY_BYTES, "a metadata key")
        if key in header.metadata:
            raise GGUFRefused(f"the metadata key '{key}' appears twice")
        header.metadata[key] = reader.value(reader.scalar("<I"), key)
    header.tensors = [_tensor(reader) for _ in range(tensor_count)]
    _check_data(header, reader.position, size)
    return header


def read_gguf_tokens(f: BinaryIO, size: int) -> tuple[str, ...] | None:
    """The vocabulary embedded in the GGUF file ``f`` (token strings by id), or None without one."""
    tokens = read_gguf_header(f, size, keep=frozenset({TOKENS})).metadata.get(TOKENS)
    return tokens if isinstance(tokens, tuple) else None


def _bounded(count: int, limit: int, what: str) -> None:
    if count > limit:
        raise GGUFRefused(f"it announces {count} {what}, more than the {limit} read")


def _tensor(reader: "_Reader") -> GGUFTensor:
    name = reader.string(MAX_KEY_BYTES, "a tensor name")
    dims = reader.scalar("<I")
    if not 1 <= dims <= MAX_DIMS:
        raise GGUFRefused(f"tensor '{name}' has {dims} dimensions")
    shape = tuple(reader.scalar("<Q") for _ in range(dims))
    type_id, offset = reader.scalar("<I"), reader.scalar("<Q")
    if type_id not in TENSOR_TYPES:
        raise UnknownTensorType(
            f"tensor '{name}' has ggml type {type_id}, a quantization that cannot be "
            f"dequantized; the known types are {', '.join(t[0] for t in TENSOR_TYPES.values())}",
            type_id,
        )
    type_name, block, block_bytes = TENSOR_TYPES[type_id]
    if shape[0] % block:
        raise GGUFRefused(
            f"tensor '{name}' has rows of {shape[0]} elements, not whole {type_name} blocks of "
            f"{block}"
        )
    numel = 1
    for d in shape:
        numel *= d
    return GGUFTensor(name, shape, type_name, offset, numel // block * block_bytes)


def _check_data(header: GGUFHeader, header_end: int, size: int) -> None:
    alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFRefused(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-header_end // alignment) * alignment
    names: set[str] = set()
    for t in header.tensors:
        if t.name in names:
            raise GGUFRefused(f"the tensor '{t.name}' appears twice")
        names.add(t.name)
        if t.offset % alignment:
            raise GGUFRefused(f"tensor '{t.name}' is not aligned to {alignment} bytes")
        if data_start + t.offset + t.nbytes > size:
            raise GGUFRefused(
                f"tensor '{t.name}' ends at byte {data_start + t.offset + t.nbytes}, past the "
                f"end of the {size}-byte file (truncated?)"
            )


class _Reader:
    """Reads the header sequentially, checking every announced length against the file."""

    def __init__(self, f: BinaryIO, size: int, keep: frozenset[str] = frozenset()) -> None:
        self.f, self.size, self.position = f, size, 0
        self.keep = keep
        self.array_strings = 0

    def raw(self, n: int) -> bytes:
        if n > self.size - self.position:
            raise GGUFRefused(
                f"it needs {n} bytes at byte {self.position} but ends at {self.size} (truncated?)"
            )
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFRefused(f"it ends early, at byte {self.position + len(data)} (truncated?)")
        self.position += n
        return data

    def skip(self, n: int) -> None:
        if n > self.size - self.position:
            raise GGUFRefused(
                f"a value of {n} bytes at byte {self.position} runs past the end of the "
                f"{self.size}-byte file (truncated?)"
            )
        self.f.seek(n, 1)
        self.position += n

    def scalar(self, fmt: str) -> int:
        (value,) = struct.unpack(fmt, self.raw(struct.calcsize(fmt)))
        return int(value)

    def string(self, limit: int, what: str) -> str:
        length = self.scalar("<Q")
        if length > limit:
            raise GGUFRefused(f"{what} at byte {self.position} is {length} bytes long")
        return self._decode(self.raw(length))

    def value(self, type_id: int, key: str) -> object:
        if type_id in _SCALARS:
            return struct.unpack(_SCALARS[type_id], self.raw(struct.calcsize(_SCALARS[type_id])))[0]
        if type_id == _STRING:
            length = self.scalar("<Q")
            if length > MAX_KEPT_STRING_BYTES:
                self.skip(length)
                return Skipped("string", length)
            return self._decode(self.raw(length))
        if type_id == _ARRAY and key in self.keep:
            return self._strings(key)
        if type_id == _ARRAY:
            return Skipped("array", self._skip_array(key, depth=0))
        raise GGUFRefused(f"metadata '{key}' has unknown value type {type_id}")

    def _strings(self, key: str) -> tuple[str, ...]:
        """An array of strings, kept: bounded like a skipped one, and in bytes as a whole."""
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type != _STRING:
            raise GGUFRefused(f"metadata '{key}' is an array of type {item_type}, not of strings")
        self._count_strings(key, count)
        strings, kept = [], 0
        for _ in range(count):
            length = self.scalar("<Q")
            kept += length
            if kept > MAX_KEPT_ARRAY_BYTES:
                raise GGUFRefused(
                    f"metadata '{key}' holds more than the {MAX_KEPT_ARRAY_BYTES} bytes read"
                )
            strings.append(self._decode(self.raw(length)))
        return tuple(strings)

    def _count_strings(self, key: str, count: int) -> None:
        self.array_strings += count
        if 8 * count > self.size - self.position:
            raise GGUFRefused(
                f"metadata '{key}' announces {count} strings, more than its remaining "
                f"{self.size - self.position} bytes can hold (truncated?)"
            )
        if self.array_strings > MAX_ARRAY_STRINGS:
            raise GGUFRefused(
                f"its arrays hold more than the {MAX_ARRAY_STRINGS} strings read in all"
            )

    def _skip_array(self, key: str, depth: int) -> int:
        """Skip an array's items, returning how many it holds."""
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[item_type]))
        elif item_type == _STRING:
            self._count_strings(key, count)
            for _ in range(count):
                self.skip(self.scalar("<Q"))
        elif item_type == _ARRAY and depth == 0:
            if 12 * count > self.size - self.position:
                raise GGUFRefused(f"metadata '{key}' announces {count} arrays, past the file")
            for _ in range(count):
                self._skip_array(key, depth + 1)
        else:
            raise GGUFRefused(f"metadata '{key}' is an array of unknown type {item_type}")
        return count

    def _decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFRefused(f"a string before byte {self.position} is not UTF-8") from exc
