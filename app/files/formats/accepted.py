"""What each purpose accepts, and what detection reports about a file."""

from dataclasses import dataclass
from typing import Literal

Purpose = Literal["teacher", "dataset"]

ACCEPTED_FORMATS: dict[str, tuple[str, ...]] = {
    "teacher": ("torchscript", "torch_export", "state_dict", "safetensors", "hf_archive", "gguf"),
    "dataset": ("npz", "safetensors", "csv", "jsonl"),
}
FORMAT_DESCRIPTIONS = {
    "torchscript": "TorchScript (torch.jit.save)",
    "torch_export": "torch.export (.pt2)",
    "state_dict": "a state_dict (torch.save of a dict of tensors)",
    "safetensors": "safetensors",
    "hf_archive": "a Hugging Face model directory as zip or tar.gz",
    "gguf": "a llama.cpp GGUF file",
    "npz": "npz",
    "csv": "csv",
    "jsonl": "jsonl",
}


@dataclass(frozen=True)
class Detected:
    format: str
    meta: dict


def accepted_formats(purpose: Purpose) -> str:
    """A sentence naming what an upload with this purpose may be, for error messages."""
    names = [FORMAT_DESCRIPTIONS[f] for f in ACCEPTED_FORMATS[purpose]]
    listed = ", ".join(names[:-1]) + f" or {names[-1]}"
    return f"A {'teacher' if purpose == 'teacher' else 'data set'} must be {listed}."
