"""The full training state as a plain dict, written so that a kill never leaves half a file."""

import os
from pathlib import Path

import torch


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    """None when there is nothing to resume. weights_only=True: the file is ours, but it sits on
    shared storage, and the state is plain tensors and numbers anyway."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
