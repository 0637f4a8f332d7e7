"""Per-epoch training time of ``run_job`` against a minimal hand-written KD loop.

    python benchmarks/engine_overhead.py [--epochs 6] [--repeats 5] [--device auto] [--threads 1]

Both train the same student (same init seed) on the same data, batch size, device, loss and
optimizer, with the teacher's logits computed per batch (the engine's teacher cache is
switched off; benchmarks/teacher_cache.py measures it). The engine runs as a worker runs it:
progress callbacks every second, validation and a checkpoint at every epoch end, a float loss
sum kept on the device. Its epoch time is the gap between two epoch-end progress callbacks, so
it includes that validation and checkpoint; setup, final metrics, latency timing and artifacts
are outside any epoch and not counted. The loop's epoch is only its batches. Epoch 1 of each is
dropped as warm-up. ``--repeats`` rounds alternate which side runs first; each round gives each
side the median of its epochs, and the pair's ratio; we print the median of those ratios.

Two clocks: wall time, and the process's CPU time. On a shared machine other processes stretch
wall time by tens of percent from one epoch to the next, far more than what we measure; CPU
time (with one torch thread, all of the work is this process's) is nearly immune to that, so
it is the headline on CPU. On a GPU, read the wall-time ratio. Target: ratio <= 1.05.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobspec import DataSpec, Hyperparameters, JobSpec, MlpArch, TeacherSpec
from worker.engine import EngineJob, NullCallbacks, Progress, run_job
from worker.engine.losses import distillation_loss
from worker.engine.models import build_model
from worker.engine.runs import torch_device

TEACHER = {"arch": "mlp", "hidden_sizes": [512, 512], "activation": "relu", "dropout": 0.0}
STUDENT = {"arch": "mlp", "hidden_sizes": [128], "activation": "relu", "dropout": 0.0}
HP = {
    "epochs": 6,
    "batch_size": 64,
    "learning_rate": 0.001,
    "optimizer": "adamw",
    "weight_decay": 0.0,
    "temperature": 4.0,
    "alpha": 0.5,
    "seed": 0,
}


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def epoch_times(ends: list[tuple[float, float]]) -> tuple[float, float]:
    """Median (wall, CPU) seconds between consecutive epoch ends: epochs 2..E."""
    gaps = np.diff(np.array(ends), axis=0)
    return float(np.median(gaps[:, 0])), float(np.median(gaps[:, 1]))


class EpochClock(NullCallbacks):
    """Stamps every epoch-end progress call (the one whose point has val_accuracy)."""

    def __init__(self) -> None:
        self.epoch_ends: list[tuple[float, float]] = []

    def on_progress(self, progress: Progress, points: list[dict]) -> None:
        if any("val_accuracy" in p for p in points):
            self.epoch_ends.append(now())


def make_data(folder: Path, repeat: int) -> tuple[Path, Path, torch.Tensor, torch.Tensor]:
    """Digits (scaled, flat) repeated ``repeat`` times for training; the original 10% held out."""
    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    val, train = order[: len(x) // 10], order[len(x) // 10 :]
    x_train, y_train = np.tile(x[train], (repeat, 1)), np.tile(y[train], repeat)
    np.savez(folder / "train.npz", x=x_train, y=y_train)
    np.savez(folder / "val.npz", x=x[val], y=y[val])
    return (
        folder / "train.npz",
        folder / "val.npz",
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
    )


def make_teacher(folder: Path) -> torch.nn.Module:
    """An untrained teacher: its accuracy does not change the time a step takes."""
    torch.manual_seed(1)
    teacher = build_model(TEACHER, (64,), 10).eval()
    torch.save(teacher.state_dict(), folder / "teacher.pt")
    return teacher


def engine_job(
    folder: Path, name: str, device: str, teacher: dict = TEACHER, **options: Any
) -> EngineJob:
    """The benchmark's job as a worker hands it to the engine: a state_dict teacher, npz data."""
    spec = JobSpec(
        teacher=TeacherSpec(file_id="file_t", arch=MlpArch.model_validate(teacher)),
        student=MlpArch.model_validate(STUDENT),
        data=DataSpec(train_file_id="file_d", validation_file_id="file_v"),
        hyperparameters=Hyperparameters.model_validate(HP),
    )
    return EngineJob(
        spec=spec,
        teacher_path=folder / "teacher.pt",
        teacher_format="state_dict",
        train_path=folder / "train.npz",
        train_format="npz",
        validation_path=folder / "val.npz",
        validation_format="npz",
        output_dir=folder / name,
        checkpoint_path=folder / f"{name}.ckpt",
        device=device,
        progress_interval=1.0,
        **options,
    )


def time_engine(folder: Path, round_: int, device: str) -> tuple[float, float]:
    # The teacher per batch, as in the hand loop.
    job = engine_job(folder, f"engine{round_}", device, teacher_cache=False)
    clock = EpochClock()
    run_job(job, clock)
    return epoch_times(clock.epoch_ends)


def time_loop(
    teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str
) -> tuple[float, float]:
    """The baseline: the KD loop anyone would write by hand."""
    dev = torch_device(device)
    teacher, x, y = teacher.to(dev), x.to(dev), y.to(dev)
    torch.manual_seed(HP["seed"])
    student = build_model(STUDENT, (64,), 10).to(dev)
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=HP["learning_rate"], weight_decay=HP["weight_decay"]
    )
    ends = []
    for _ in range(HP["epochs"]):
        for index in torch.randperm(len(x)).to(dev).split(HP["batch_size"]):
            xb, yb = x[index], y[index]
            with torch.no_grad():
                teacher_logits = teacher(xb)
            loss = distillation_loss(
                student(xb), teacher_logits, yb, HP["temperature"], HP["alpha"]
            ).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ends.append(now())
    return epoch_times(ends)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repeat-data", type=int, default=24, help="copies of digits to train on")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    HP["epochs"] = args.epochs
    torch.set_num_threads(args.threads)

    engine, loop = [], []  # per round: (wall, cpu) seconds per epoch
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, _, x, y = make_data(folder, args.repeat_data)
        teacher = make_teacher(folder)
        for round_ in range(args.repeats):
            order = ["engine", "loop"] if round_ % 2 == 0 else ["loop", "engine"]
            for side in order:
                if side == "engine":
                    engine.append(time_engine(folder, round_, args.device))
                else:
                    loop.append(time_loop(teacher, x, y, args.device))
            (ew, ec), (lw, lc) = engine[-1], loop[-1]
            print(
                f"round {round_ + 1}: wall engine {ew:.3f} / loop {lw:.3f} s/epoch, "
                f"cpu engine {ec:.3f} / loop {lc:.3f} s/epoch"
            )

    print(f"device {torch_device(args.device)}, threads {args.threads}, {len(x)} training rows")
    for i, clock in enumerate(("wall", "cpu")):
        ratios = [e[i] / lo[i] for e, lo in zip(engine, loop, strict=True)]
        print(
            f"{clock}: engine {statistics.median(e[i] for e in engine):.3f} s/epoch, "
            f"loop {statistics.median(lo[i] for lo in loop):.3f} s/epoch, "
            f"ratio engine/loop = {statistics.median(ratios):.3f} "
            f"(median of per-round ratios, range {min(ratios):.3f}-{max(ratios):.3f})"
        )
    print("target: ratio <= 1.05")


if __name__ == "__main__":
    main()
