"""GGUF teachers (llama.cpp files): the header read by file_rules/gguf.py's bounded parser, never
executed or loaded, and the facts a language-model job is checked against."""

from pathlib import Path

from app.files.formats.accepted import Detected
from app.files.formats.errors import unsupported
from file_rules.gguf import MAGIC, GGUFHeader, GGUFRefused, Skipped, read_gguf_header


def is_gguf(head: bytes) -> bool:
    return head.startswith(MAGIC)


def detect_gguf(path: Path, size: int) -> Detected:
    with path.open("rb") as f:
        try:
            header = read_gguf_header(f, size)
        except GGUFRefused as exc:
            raise unsupported("teacher", f"This GGUF file cannot be read: {exc}.") from exc
    return Detected("gguf", _gguf_meta(header))


def _gguf_meta(header: GGUFHeader) -> dict:
    meta = header.metadata
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = tokens.length if isinstance(tokens, Skipped) else _number(meta, f"{arch}.vocab_size")
    return {
        "task": "causal_lm",
        "architecture": arch,
        "params": sum(t.numel for t in header.tensors),
        "tensors": len(header.tensors),
        "vocab_size": vocab,
        "num_layers": _number(meta, f"{arch}.block_count"),
        "max_positions": _number(meta, f"{arch}.context_length"),
        "quantization": _by_use([t.type_name for t in header.tensors]),
        "has_tokenizer": isinstance(tokens, Skipped),
        "has_chat_template": "tokenizer.chat_template" in meta,
        "gguf_version": header.version,
    }


def _number(meta: dict, key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _by_use(types: list[str]) -> list[str]:
    """The tensor types, the most used first."""
    return sorted(set(types), key=lambda t: (-types.count(t), t))
