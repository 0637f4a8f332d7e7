"""GGUF teachers (llama.cpp files): checked, dequantized by transformers, and saved once as an
ordinary float model folder, so that every later step reads a plain Hugging Face directory.

A GGUF file is data only: a header of typed key-value pairs (the config, the tokenizer and its
chat template) and quantized tensors; nothing in it runs. ``inspect_gguf`` reads the header with
the upload check's bounded reader (file_rules/gguf.py) and refuses, before any tensor is
dequantized, a file that is damaged or truncated (``teacher_load_failed``) or that uses an
architecture or a quantization this worker cannot dequantize (``unsupported_teacher``).

transformers loads a GGUF into a float model whose config still carries a GGUF
``quantization_config``; saved as it is, that folder would ask for the GGUF file again. So
``gguf_to_hf`` builds a fresh model of the same class from the config without it, moves the
dequantized weights in, and saves that with the embedded tokenizer (chat template included).
"""

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from file_rules.gguf import MAGIC, GGUFRefused, UnknownTensorType, read_gguf_header
from worker.engine.errors import TeacherLoadError, UnsupportedInput, last_line


@dataclass(frozen=True)
class GGUFFacts:
    architecture: str  # llama.cpp's name: "llama", "qwen2", ...
    quantizations: tuple[str, ...]  # the tensor types present, e.g. ("F32", "Q4_1", "Q6_K")
    tensors: int


def inspect_gguf(path: Path) -> GGUFFacts:
    """The header's facts, or a clear error for a file this worker cannot turn into a model."""
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise TeacherLoadError(f"{path.name} is not a GGUF file (it does not start with GGUF).")
        f.seek(0)
        try:
            header = read_gguf_header(f, path.stat().st_size)
        except UnknownTensorType as e:
            raise _unknown_quantization(path, _type_name(e.type_id)) from e
        except GGUFRefused as e:
            raise _damaged(path, e) from e
    architecture = _architecture(path, header.metadata.get("general.architecture"))
    types = sorted({t.type_name for t in header.tensors})
    return GGUFFacts(architecture, tuple(types), len(header.tensors))


def gguf_to_hf(path: Path, dest: Path) -> Path:
    """Dequantize ``path`` into ``dest`` as a float32 model folder (config, safetensors,
    tokenizer, chat template, generation config) that ``AutoModelForCausalLM.from_pretrained``
    and ``AutoTokenizer.from_pretrained`` load alone. Written beside ``dest`` and renamed, so a
    failure leaves no half-written folder. Returns ``dest``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worker.engine.hf import quiet_transformers

    inspect_gguf(path)
    quiet_transformers()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True
        )
    except Exception as e:
        raise TeacherLoadError(
            f"transformers could not dequantize {path.name}: {last_line(e)}"
        ) from e
    model = _plain_copy(loaded)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def _plain_copy(loaded: Any) -> Any:
    """The same model, built from its config without ``quantization_config``: the weights are
    moved, not copied (a meta model takes them with ``assign``), so memory holds one copy."""
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    # assign gives each name its own Parameter; tie the LM head to the embeddings again.
    model.tie_weights()
    model.generation_config = loaded.generation_config
    return model.eval()


def _type_name(type_id: int) -> str:
    """ggml's name of a type id (Q8_1: known, yet not dequantizable), else the bare id."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"id {type_id}"


def _architecture(path: Path, architecture: object) -> str:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if not isinstance(architecture, str):
        raise _damaged(path, ValueError("no general.architecture in the header"))
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise UnsupportedInput(
            f"{path.name} is a GGUF of architecture {architecture!r}, which transformers cannot "
            f"load from GGUF; supported: {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))}. "
            "Upload the model as a Hugging Face archive instead.",
            code="unsupported_teacher",
        )
    return architecture


def _damaged(path: Path, error: BaseException) -> TeacherLoadError:
    return TeacherLoadError(
        f"{path.name} is not a complete GGUF file (truncated or damaged: {last_line(error)}); "
        "upload it again."
    )


def _unknown_quantization(path: Path, qtype: str) -> UnsupportedInput:
    return UnsupportedInput(
        f"{path.name} uses the quantization type {qtype}, which this worker cannot dequantize; "
        "convert it to a common type (e.g. Q8_0, Q4_K_M or F16) with llama.cpp's quantize tool.",
        code="unsupported_teacher",
    )
