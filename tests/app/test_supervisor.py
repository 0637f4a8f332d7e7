"""Which worker processes ``distill worker`` runs: the pure plan, GPU by GPU."""

import pytest

from app.gpus import Gpu
from app.supervisor import PlanError, WorkerSpec, plan_workers

GPUS = [Gpu(0, "NVIDIA H200", 141 * 2**30), Gpu(1, "NVIDIA H200", 141 * 2**30),
        Gpu(2, "NVIDIA L4", 24 * 2**30)]  # fmt: skip


def pinned(index: int) -> dict[str, str]:
    return {
        "CUDA_VISIBLE_DEVICES": str(index),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "DISTILL_DEVICE": "cuda",
    }


def names_and_envs(specs: list[WorkerSpec]) -> list[tuple[str, dict[str, str]]]:
    return [(spec.name, spec.env) for spec in specs]


def test_one_worker_per_gpu_each_pinned_to_its_own() -> None:
    specs = plan_workers("auto", GPUS, device="auto")
    assert names_and_envs(specs) == [
        ("distill-gpu0@%h", pinned(0)),
        ("distill-gpu1@%h", pinned(1)),
        ("distill-gpu2@%h", pinned(2)),
    ]
    assert [spec.gpu for spec in specs] == GPUS
    assert plan_workers("all", GPUS, device="cuda") == specs


def test_the_gpus_asked_for_in_the_order_given() -> None:
    specs = plan_workers("2,0,2", GPUS, device="auto", name="lab@node7")
    assert names_and_envs(specs) == [("lab-gpu2@node7", pinned(2)), ("lab-gpu0@node7", pinned(0))]


def test_a_single_gpu_keeps_the_node_name() -> None:
    assert names_and_envs(plan_workers("1", GPUS, device="auto")) == [("distill@%h", pinned(1))]
    assert names_and_envs(plan_workers("auto", GPUS[:1], device="auto")) == [
        ("distill@%h", pinned(0))
    ]


def test_several_processes_per_gpu() -> None:
    specs = plan_workers("0", GPUS, device="auto", processes=2)
    assert names_and_envs(specs) == [("distill-gpu0-0@%h", pinned(0)),
                                     ("distill-gpu0-1@%h", pinned(0))]  # fmt: skip


def test_without_gpus_cpu_workers_keep_the_environment_as_it_is() -> None:
    assert names_and_envs(plan_workers("auto", [], device="auto")) == [("distill@%h", {})]
    assert names_and_envs(plan_workers("auto", GPUS, device="cpu", processes=2)) == [
        ("distill-cpu0@%h", {}),
        ("distill-cpu1@%h", {}),
    ]
    assert names_and_envs(plan_workers("none", GPUS, device="auto")) == [("distill@%h", {})]


def test_distill_device_and_cuda_visible_devices_narrow_auto_down() -> None:
    assert names_and_envs(plan_workers("auto", GPUS, device="cuda:2")) == [
        ("distill@%h", pinned(2))
    ]
    specs = plan_workers("auto", GPUS, device="auto", visible="2,1")
    assert [spec.gpu for spec in specs] == [GPUS[2], GPUS[1]]
    # UUIDs or MIG instances: pinned by the operator already, so one worker as configured
    uuid = "GPU-5f0c1c7e-3a1b-4a43-9d7e-2b6f0d3c9a11"
    assert names_and_envs(plan_workers("auto", GPUS, device="auto", visible=uuid)) == [
        ("distill@%h", {})
    ]


@pytest.mark.parametrize(
    ("gpus", "detected", "device", "says"),
    [
        ("3", GPUS, "auto", "no GPU 3 on this machine (GPUs: 0, 1, 2)"),
        ("0", [], "auto", "no GPU 0 on this machine (GPUs: none)"),
        ("all", [], "auto", "finds no GPU"),
        ("0,x", GPUS, "auto", "expected GPU indices"),
        ("0", GPUS, "cpu", "DISTILL_DEVICE is cpu"),
    ],
)
def test_impossible_plans_are_refused(
    gpus: str, detected: list[Gpu], device: str, says: str
) -> None:
    with pytest.raises(PlanError, match=says.replace("(", r"\(").replace(")", r"\)")):
        plan_workers(gpus, detected, device=device)
