"""Which device this worker trains on, and what to call it."""

import platform

import torch


def resolve_device(setting: str) -> str:
    """``auto`` means CUDA when present, else CPU; anything else is taken as asked."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def describe_device(setting: str) -> tuple[str, str]:
    device = torch.device(resolve_device(setting))
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}", torch.cuda.get_device_name(index)
    return device.type, platform.processor() or platform.machine() or "cpu"
