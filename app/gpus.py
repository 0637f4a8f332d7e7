"""The machine's NVIDIA GPUs, found without torch (the ``distill`` command never loads it)."""

import shutil
import subprocess
import sys
from dataclasses import dataclass

QUERY = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]


@dataclass(frozen=True)
class Gpu:
    index: int  # nvidia-smi's, which is the PCI bus order (CUDA_DEVICE_ORDER=PCI_BUS_ID)
    name: str
    memory_bytes: int


def parse_nvidia_smi(output: str) -> list[Gpu]:
    """``nvidia-smi`` + ``QUERY`` output: one ``index, name, memory in MiB`` line per GPU."""
    gpus = []
    for line in filter(str.strip, output.splitlines()):
        index, rest = line.split(",", 1)
        name, memory = rest.rsplit(",", 1)
        try:
            memory_bytes = int(float(memory)) * 2**20
        except ValueError:  # "[N/A]"
            memory_bytes = 0
        gpus.append(Gpu(int(index), name.strip(), memory_bytes))
    return gpus


def detect_gpus() -> list[Gpu]:
    """The GPUs ``nvidia-smi`` lists; none where it is missing or finds no driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, *QUERY], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(
            f"nvidia-smi did not answer ({e}); treating this machine as CPU-only.", file=sys.stderr
        )
        return []
    if done.returncode != 0:
        return []  # "No devices were found", or no driver loaded
    return parse_nvidia_smi(done.stdout)
