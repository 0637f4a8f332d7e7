"""The machine's GPUs through NVML, and none without an NVIDIA driver."""

import shutil
import subprocess

import pytest

from app.gpus import Gpu, detect_gpus

NVIDIA_SMI = shutil.which("nvidia-smi")


@pytest.mark.skipif(NVIDIA_SMI is not None, reason="this machine has an NVIDIA driver")
def test_a_machine_without_a_driver_has_no_gpus() -> None:
    assert detect_gpus() == []


@pytest.mark.skipif(NVIDIA_SMI is None, reason="needs an NVIDIA driver")
@pytest.mark.gpu
def test_the_gpus_are_the_ones_nvidia_smi_lists_in_its_order() -> None:
    listed = subprocess.run(
        [str(NVIDIA_SMI), "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = []
    for line in filter(str.strip, listed.splitlines()):
        index, name, memory = (part.strip() for part in line.split(","))
        memory_bytes = int(memory) * 2**20 if memory.isdigit() else 0  # "[N/A]" under MIG
        expected.append(Gpu(int(index), name, memory_bytes))
    found = detect_gpus()
    assert [(g.index, g.name) for g in found] == [(g.index, g.name) for g in expected]
    for gpu, smi in zip(found, expected, strict=True):  # nvidia-smi rounds down to MiB
        assert smi.memory_bytes <= gpu.memory_bytes < smi.memory_bytes + 2**20
