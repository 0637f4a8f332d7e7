"""One classification job on two ranks (ddp, fsdp; gloo on the CPU) against the same job on one.

    python benchmarks/distributed.py [--quick]   # defaults: --repeats 3 --epochs 4 --repeat-data 4
        # --hidden 1024 1024 1024 --batch-size 256 --memory-hidden 4096 4096 4096

Scaling. The digits teacher of the engine's tests (tests/helpers/teachers.py: an MLP trained
on scikit-learn's digits) distilled into an MLP student big enough that its steps dominate,
through ``run_job``, on 1 rank and on 2 ranks with each strategy. Every rank runs one torch
thread (the job's thread count; the ranks 1..N-1 take rank 0's), so 2 ranks use 2 cores against
1 rank's 1. Throughput is the training phase's: training rows x epochs / ``train_seconds`` (which
includes each epoch's validation, run whole on every rank, and its checkpoint). The global
batch is the same on both, so the 2-rank student should end where the 1-rank one does: the
final metrics are printed side by side. ``--repeats`` rounds alternate the order of the runs;
the ratio is the median of the per-round ratios. Beside it, the CPU seconds all ranks use per
epoch (between consecutive epoch ends, epochs 2..E; ``/proc/<pid>/stat`` for the spawned ranks):
on a machine whose cores are busy with other work, wall time says what the second core was
free to give, CPU time what the second rank costs (communication, its own validation).

Memory. An MLP student whose parameters dominate (``--memory-hidden``, tens of millions of
parameters, AdamW: two float32 states per parameter), one epoch on 2 ranks, ddp against fsdp.
Two figures per rank:
- peak RSS, the kernel's high-water mark (``VmHWM`` in ``/proc/<pid>/status``) of rank 0 (the
  process running ``run_job``) and of rank 1 (the process it spawned), read by a callback at
  the last epoch end: training, validation and the checkpoint, not the gathering of the whole
  student afterwards (the whole-job peaks, ``ru_maxrss`` of the process and of its reaped
  children, are printed beside it). The same job with a tiny student gives the fixed part
  (torch, the data, the teacher), which is subtracted for the second ratio;
- the bytes of the student's parameters, gradients and optimizer state each rank holds (the
  part FSDP shards), counted on live tensors (a DTensor's local shard) after one step of a
  separate 2-rank gang built with the engine's own ``joined``, ``Gang.wrap`` and
  ``make_optimizer``. Expected fsdp / ddp: about 1/N.
Each job runs in a fresh subprocess (so its peaks are its own); the memory jobs with glibc's mmap
threshold fixed so that freed tensors leave RSS (not the timed ones: every large tensor would
then cost fresh page faults). No thresholds are asserted: the machine is shared.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobspec import JobSpec
from worker.engine import EngineJob, NullCallbacks, Progress, run_job
from worker.engine.distributed import joined
from worker.engine.models import build_model
from worker.engine.runs import make_optimizer

QUICK = {
    "repeats": 1,
    "epochs": 2,
    "repeat_data": 1,
    "hidden": [256, 256],
    "memory_hidden": [1024, 1024],
}
METRICS = ("student_accuracy", "teacher_accuracy", "agreement", "world_size")
TINY = [32]  # the student of the fixed-overhead run


def mlp(hidden: list[int]) -> dict:
    return {"arch": "mlp", "hidden_sizes": hidden, "activation": "relu", "dropout": 0.0}


# -- the data and the job ----------------------------------------------------------------------


def make_data(folder: Path, repeat: int) -> int:
    """The tests' digits teacher (torchscript) and its data, training rows repeated ``repeat``
    times; returns the number of training rows."""
    from tests.helpers.teachers import save_npz, save_teacher, train_digits_teacher

    trained = train_digits_teacher("mlp")
    save_teacher(trained.model, folder / "teacher.pt", "torchscript")
    x, y = np.tile(trained.x_train, (repeat, 1)), np.tile(trained.y_train, repeat)
    save_npz(folder / "train.npz", x, y)
    save_npz(folder / "val.npz", trained.x_val, trained.y_val)
    return len(x)


def make_job(
    folder: Path, out: Path, hidden: list[int], world_size: int, strategy: str, hp: dict
) -> EngineJob:
    """The job on ``folder``'s files, writing its artifacts and checkpoint under ``out``."""
    spec = JobSpec.model_validate(
        {
            "teacher": {"file_id": "file_teacher"},
            "student": mlp(hidden),
            "data": {"train_file_id": "file_train", "validation_file_id": "file_val"},
            "hyperparameters": {"optimizer": "adamw", "seed": 0, **hp},
            "resources": {"devices": world_size},
            "distributed": {"strategy": strategy},
        }
    )
    return EngineJob(
        spec=spec,
        teacher_path=folder / "teacher.pt",
        teacher_format="torchscript",
        train_path=folder / "train.npz",
        train_format="npz",
        validation_path=folder / "val.npz",
        validation_format="npz",
        output_dir=out / "out",
        checkpoint_path=out / "checkpoint",
        device="cpu",
        world_size=world_size,
        progress_interval=3600.0,  # epoch ends only
    )


# -- one job, in its own process ---------------------------------------------------------------


def high_water_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no VmHWM for {pid}")


def rank_pids() -> list[int]:
    """The rank processes this process spawned (not multiprocessing's resource tracker)."""
    children = []
    for task in Path("/proc/self/task").iterdir():
        children += (task / "children").read_text().split()
    return [int(p) for p in children if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class EpochEnds(NullCallbacks):
    """At every epoch end (after its validation and checkpoint): the CPU seconds the ranks have
    used, and each rank's peak RSS so far."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.peaks: list[float] = []

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        if any("val_accuracy" in p for p in points):
            ranks = rank_pids()
            self.cpu.append(time.process_time() + sum(cpu_seconds(pid) for pid in ranks))
            self.peaks = [high_water_mib()] + [high_water_mib(pid) for pid in ranks]

    @property
    def cpu_per_epoch(self) -> float | None:
        """Median CPU seconds of all ranks between consecutive epoch ends (epochs 2..E)."""
        return float(np.median(np.diff(self.cpu))) if len(self.cpu) > 1 else None


def run_variant(args: argparse.Namespace) -> None:
    folder, world_size, strategy, hidden, hp = json.loads(args.variant)
    torch.set_num_threads(1)  # the job's threads; the other ranks take rank 0's
    clock = EpochEnds()
    with tempfile.TemporaryDirectory(dir=folder) as out:
        job = make_job(Path(folder), Path(out), hidden, world_size, strategy, hp)
        result = run_job(job, clock)
    kib = 1 / 1024
    print(
        json.dumps(
            {
                "metrics": {k: result.metrics.get(k) for k in (*METRICS, "train_seconds")},
                "epoch_end_peaks": clock.peaks,
                "cpu_per_epoch": clock.cpu_per_epoch,
                "job_peaks": [
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
                    resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
                ],
            }
        )
    )


def variant(
    folder: Path, world_size: int, strategy: str, hidden: list[int], hp: dict, env: dict
) -> dict:
    spec = json.dumps([str(folder), world_size, strategy, hidden, hp])
    env = {**os.environ, **env}
    argv = [sys.executable, __file__, "--variant", spec]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the sharded part: parameters, gradients, optimizer state ----------------------------------


def local_bytes(tensors: Any) -> int:
    total = 0
    for t in tensors:
        if isinstance(t, torch.Tensor):
            t = t.to_local() if isinstance(t, DTensor) else t
            total += t.numel() * t.element_size()
    return total


def _state_rank(rank: int, job: EngineJob, hidden: list[int], port: int, scratch: Path) -> None:
    """One step of the job's student as the engine wraps it; this rank's bytes to a file."""
    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, job.world_size, is_master=False)
    with joined(job, rank, store, scratch) as gang:
        torch.manual_seed(0)
        model = build_model(mlp(hidden), (64,), 10)
        forward = gang.wrap(model) or model
        optimizer = make_optimizer(model, job.spec.hyperparameters)
        forward(torch.randn(8, 64)).logsumexp(1).mean().backward()
        optimizer.step()
        state = {
            "parameters": local_bytes(model.parameters()),
            "gradients": local_bytes(p.grad for p in model.parameters()),
            "optimizer": local_bytes(v for s in optimizer.state.values() for v in s.values()),
        }
    (scratch / f"{rank}.json").write_text(json.dumps(state))


def state_bytes(folder: Path, strategy: str, hidden: list[int], hp: dict) -> list[dict]:
    """Per rank: the bytes of the student's parameters, gradients and optimizer state."""
    job = make_job(folder, folder, hidden, 2, strategy, hp)  # writes nothing
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory() as scratch:
        mp.start_processes(
            _state_rank,
            args=(job, hidden, store.port, Path(scratch)),
            nprocs=2,
            start_method="spawn",
        )
        return [json.loads((Path(scratch) / f"{r}.json").read_text()) for r in range(2)]


# -- the report --------------------------------------------------------------------------------


def throughput(run: dict, rows: int, epochs: int) -> float:
    return rows * epochs / run["metrics"]["train_seconds"]


def scaling(folder: Path, rows: int, args: argparse.Namespace) -> None:
    hp = {"epochs": args.epochs, "batch_size": args.batch_size}
    sides = [(1, "ddp"), (2, "ddp"), (2, "fsdp")]
    runs: dict[tuple[int, str], list[dict]] = {side: [] for side in sides}
    for round_ in range(args.repeats):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            runs[side].append(variant(folder, *side, args.hidden, hp, env={}))
        speeds = {s: throughput(r[-1], rows, args.epochs) for s, r in runs.items()}
        print(
            f"round {round_ + 1}: examples/s "
            + ", ".join(f"{n} rank(s) {s} {v:.0f}" for (n, s), v in speeds.items())
            + f"; load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    params = sum(p.numel() for p in build_model(mlp(args.hidden), (64,), 10).parameters())
    print(
        f"\nscaling: student MLP 64-{'-'.join(map(str, args.hidden))}-10 ({params:,} parameters), "
        f"{rows} training rows x {args.epochs} epochs, global batch {args.batch_size}, "
        "one torch thread a rank"
    )
    base = runs[(1, "ddp")]
    for side in sides:
        label = "1 rank" if side[0] == 1 else f"2 ranks {side[1]}"
        mine = runs[side]
        speed = [throughput(r, rows, args.epochs) for r in mine]
        ratios = [s / throughput(b, rows, args.epochs) for s, b in zip(speed, base, strict=True)]
        cpu = [r["cpu_per_epoch"] / b["cpu_per_epoch"] for r, b in zip(mine, base, strict=True)]
        metrics = mine[-1]["metrics"]
        print(
            f"{label:15s} {statistics.median(speed):6.0f} examples/s, "
            f"ratio to 1 rank {statistics.median(ratios):.3f} "
            f"(range {min(ratios):.3f}-{max(ratios):.3f}); "
            f"CPU s/epoch, all ranks {statistics.median(r['cpu_per_epoch'] for r in mine):.2f} "
            f"(ratio {statistics.median(cpu):.3f}); "
            + ", ".join(f"{k} {metrics[k]:.4f}" for k in METRICS[:-1])
        )


def memory(folder: Path, args: argparse.Namespace) -> None:
    hp = {"epochs": 1, "batch_size": args.batch_size}
    # A fixed mmap threshold: glibc otherwise serves large tensors from a heap it never gives
    # back, and RSS would stop following what is live (benchmarks/lm_loss_memory.py).
    env = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    fixed = variant(folder, 2, "ddp", TINY, hp, env)
    runs = {s: variant(folder, 2, s, args.memory_hidden, hp, env) for s in ("ddp", "fsdp")}
    states = {s: state_bytes(folder, s, args.memory_hidden, hp) for s in ("ddp", "fsdp")}
    params = sum(p.numel() for p in build_model(mlp(args.memory_hidden), (64,), 10).parameters())
    print(
        f"\nmemory: student MLP 64-{'-'.join(map(str, args.memory_hidden))}-10 "
        f"({params:,} parameters, {params * 4 / 2**20:.0f} MiB float32), AdamW, 1 epoch, 2 ranks"
    )
    print(
        "fixed part (the same job, student 64-32-10, ddp): peak RSS per rank "
        + " / ".join(f"{p:.0f}" for p in fixed["epoch_end_peaks"])
        + " MiB"
    )
    for strategy, run in runs.items():
        state = states[strategy]
        print(
            f"{strategy}: peak RSS per rank to the last epoch end "
            + " / ".join(f"{p:.0f}" for p in run["epoch_end_peaks"])
            + " MiB, whole job "
            + " / ".join(f"{p:.0f}" for p in run["job_peaks"])
            + "; parameters+gradients+optimizer state per rank "
            + " / ".join(f"{sum(s.values()) / 2**20:.0f}" for s in state)
            + " MiB ("
            + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in state[0].items())
            + f" on rank 0); student_accuracy {run['metrics']['student_accuracy']:.4f}"
        )
    for rank in range(2):
        peak = {s: r["epoch_end_peaks"][rank] for s, r in runs.items()}
        above = {s: p - fixed["epoch_end_peaks"][rank] for s, p in peak.items()}
        state = {s: sum(states[s][rank].values()) for s in states}
        print(
            f"rank {rank} fsdp / ddp: parameters+gradients+optimizer state "
            f"{state['fsdp'] / state['ddp']:.3f} (expected about 1/2), "
            f"peak RSS {peak['fsdp'] / peak['ddp']:.3f}, "
            f"peak RSS above the fixed part {above['fsdp'] / above['ddp']:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small, one round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat-data", type=int, default=4, help="copies of the training rows")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024, 1024])
    parser.add_argument("--memory-hidden", type=int, nargs="+", default=[4096, 4096, 4096])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return run_variant(args)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = make_data(folder, args.repeat_data)
        scaling(folder, rows, args)
        memory(folder, args)
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPU cores (shared: timings are noisy)")


if __name__ == "__main__":
    main()
