"""Reading nvidia-smi's GPU list."""

from app.gpus import Gpu, parse_nvidia_smi

# nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits, on an 8-GPU box
# with a MIG-enabled GPU that reports no memory
OUTPUT = """0, NVIDIA H200, 143771
1, NVIDIA H200, 143771
2, NVIDIA A100-SXM4-80GB, 81920
3, NVIDIA A100, [N/A]

"""


def test_parse_nvidia_smi() -> None:
    assert parse_nvidia_smi(OUTPUT) == [
        Gpu(0, "NVIDIA H200", 143771 * 2**20),
        Gpu(1, "NVIDIA H200", 143771 * 2**20),
        Gpu(2, "NVIDIA A100-SXM4-80GB", 81920 * 2**20),
        Gpu(3, "NVIDIA A100", 0),
    ]
    assert parse_nvidia_smi("") == []
