"""TorchScript calls, without their deprecation warning.

torch deprecates TorchScript, but the contract promises ``student.pt`` as TorchScript and accepts
TorchScript teachers, so each job would log the same warning for nothing.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def script(module: nn.Module) -> torch.jit.ScriptModule:
    with _quiet():
        return torch.jit.script(module)


def save(module: torch.jit.ScriptModule, path: Path) -> None:
    with _quiet():
        torch.jit.save(module, str(path))


def load(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    with _quiet():
        return torch.jit.load(str(path), map_location=device)
