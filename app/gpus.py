"""The machine's NVIDIA GPUs, found through NVML (``nvidia-ml-py``) without torch: the
``distill`` command never loads it."""

import logging
from dataclasses import dataclass
from typing import Any

try:
    import pynvml
except ImportError:  # a client or API install: only the worker extra brings nvidia-ml-py
    pynvml = None

log = logging.getLogger("distill.gpus")


@dataclass(frozen=True)
class Gpu:
    index: int  # NVML's, which is nvidia-smi's: the PCI bus order (CUDA_DEVICE_ORDER=PCI_BUS_ID)
    name: str
    memory_bytes: int  # 0 where the driver does not say (a MIG-enabled GPU)


def detect_gpus() -> list[Gpu]:
    """The GPUs NVML lists; none on a machine without an NVIDIA driver or ``nvidia-ml-py``."""
    if pynvml is None:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:  # no driver or no NVML library: a CPU-only machine
        log.debug("NVML is not available (%s): no GPUs", e)
        return []
    try:
        count = pynvml.nvmlDeviceGetCount()
        return [_describe(pynvml.nvmlDeviceGetHandleByIndex(i), i) for i in range(count)]
    finally:
        pynvml.nvmlShutdown()


def _describe(handle: Any, index: int) -> Gpu:
    name = pynvml.nvmlDeviceGetName(handle)
    try:
        memory = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except pynvml.NVMLError:
        memory = 0
    return Gpu(index, name.decode() if isinstance(name, bytes) else str(name), memory)
