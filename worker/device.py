"""Which device this worker trains on, and what to call it."""

import os
import platform

import torch


def device_setting(setting: str) -> str:
    """The worker's device setting resolved, as the engine's ``EngineJob.device`` takes it:
    ``auto`` means ``cuda`` when present, else ``cpu``; anything else is taken as asked. (The
    engine turns it into a ``torch.device`` in ``runs.torch_device``.)"""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def describe_device(setting: str) -> tuple[str, str]:
    """The device as the queue shows it, e.g. ``("cuda:2", "NVIDIA H200")``: a worker pinned to
    one GPU by ``CUDA_VISIBLE_DEVICES`` (``distill worker`` does that) names the GPU by its
    machine-wide index, not by its index among the visible ones, which is always 0."""
    device = torch.device(device_setting(setting))
    if device.type == "cuda":
        index = _cuda_index(device)
        return f"cuda:{_machine_index(index)}", torch.cuda.get_device_name(index)
    return device.type, platform.processor() or platform.machine() or "cpu"


def device_memory_bytes(setting: str) -> int:
    """The device's memory: the GPU's, or the machine's for a CPU worker."""
    device = torch.device(device_setting(setting))
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(_cuda_index(device)).total_memory)
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _machine_index(visible_index: int) -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if visible_index < len(visible) and visible[visible_index].strip().isdigit():
        return int(visible[visible_index])
    return visible_index
