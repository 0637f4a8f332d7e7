"""Builders for real teachers and data sets, shared by the engine, sandbox, integration and client
tests: a small model trained on scikit-learn's digits (offline, seconds on a CPU, once per session
and kind), saved in each teacher format the contract accepts, and data saved in each data format."""

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from jobspec import JobSpec
from worker.engine import EngineJob, jit
from worker.engine.models import build_model

TEACHER_ARCHS = {
    "cnn": {
        "arch": "cnn",
        "channels": [16, 32],
        "kernel_size": 3,
        "hidden_sizes": [64],
        "activation": "relu",
        "dropout": 0.0,
    },
    "mlp": {"arch": "mlp", "hidden_sizes": [256, 128], "activation": "relu", "dropout": 0.0},
}
TEACHER_FORMATS = ("torchscript", "torch_export", "state_dict", "safetensors")
TEACHER_FILES = {  # the names the digits teacher is saved (and uploaded) under
    "torchscript": "teacher.pt",
    "torch_export": "teacher.pt2",
    "state_dict": "teacher_state_dict.pt",
    "safetensors": "teacher.safetensors",
}


@dataclass
class TrainedTeacher:
    """A teacher trained on digits, in eval mode, with its data as numpy arrays: x float32 shaped
    (N, 1, 8, 8) for a cnn or (N, 64) for an mlp, y int64; a stratified 70/10/20 split."""

    model: nn.Module
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_accuracy: float


def digits(kind: str = "cnn", seed: int = 0) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test) of digit images scaled to [0, 1]."""
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)
    x = x[:, None] if kind == "cnn" else x.reshape(len(x), -1)
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.125, random_state=seed, stratify=y_rest
    )
    return x_train, y_train, x_val, y_val, x_test, y_test


@functools.cache
def train_digits_teacher(kind: str = "cnn", epochs: int = 15, seed: int = 0) -> TrainedTeacher:
    """About 96% test accuracy in 1.5 s (cnn) or 0.2 s (mlp) on one CPU thread. Trained once per
    session for each set of arguments: every caller shares the teacher, so none may change it."""
    threads = torch.get_num_threads()
    # One thread: faster for a model this small, and on a shared machine a second thread spins
    # against other processes (8x slower, measured).
    torch.set_num_threads(1)
    try:
        return _train(kind, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(kind: str, epochs: int, seed: int) -> TrainedTeacher:
    arrays = digits(kind, seed)
    x_train, y_train = torch.from_numpy(arrays[0]), torch.from_numpy(arrays[1])
    torch.manual_seed(seed)
    model = build_model(TEACHER_ARCHS[kind], tuple(x_train.shape[1:]), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(x_train), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    test_accuracy = accuracy(model, arrays[4], arrays[5])
    return TrainedTeacher(model, kind, *arrays, test_accuracy=test_accuracy)


@dataclass
class Digits:
    """A digits teacher saved in some formats (``teachers``), with its data as npz files."""

    trained: TrainedTeacher
    teachers: dict[str, Path]
    train: Path
    validation: Path
    train_unlabelled: Path  # x only
    narrow: Path  # 10 features per row, labelled: data the teacher cannot take

    @property
    def teacher(self) -> Path:
        """The TorchScript teacher."""
        return self.teachers["torchscript"]

    def job(self, tmp_path: Path, spec: JobSpec | None = None, **overrides: Any) -> EngineJob:
        """An engine job on these files: the torchscript teacher and npz data unless overridden."""
        return engine_job(
            tmp_path, spec or job_spec(), self.teacher, self.train, self.validation, **overrides
        )


def save_digits(folder: Path, kind: str, formats: tuple[str, ...] = TEACHER_FORMATS) -> Digits:
    """The session's digits teacher of ``kind`` (cnn or mlp) and its data, saved in ``folder``."""
    trained = train_digits_teacher(kind)
    x_train, y_train = trained.x_train, trained.y_train
    return Digits(
        trained=trained,
        teachers={f: save_teacher(trained.model, folder / TEACHER_FILES[f], f) for f in formats},
        train=save_npz(folder / "train.npz", x_train, y_train),
        validation=save_npz(folder / "val.npz", trained.x_val, trained.y_val),
        train_unlabelled=save_npz(folder / "train_x.npz", x_train),
        narrow=save_npz(folder / "narrow.npz", x_train.reshape(len(x_train), -1)[:, :10], y_train),
    )


def engine_job(
    tmp_path: Path, spec: JobSpec, teacher: Path, train: Path, validation: Path, **overrides: Any
) -> EngineJob:
    """An engine job on a torchscript teacher and npz data, writing under ``tmp_path``."""
    fields = {
        "spec": spec,
        "teacher_path": teacher,
        "teacher_format": "torchscript",
        "train_path": train,
        "train_format": "npz",
        "validation_path": validation,
        "validation_format": "npz",
        "output_dir": tmp_path / "out",
        "checkpoint_path": tmp_path / "checkpoint.pt",
        "device": "cpu",
        "progress_interval": 3600.0,  # epoch ends only, unless a test asks for more
    }
    return EngineJob(**(fields | overrides))


def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    with torch.no_grad():
        predicted = model(torch.as_tensor(x)).argmax(1)
    return (predicted == torch.as_tensor(y)).float().mean().item()


def save_teacher(
    model: nn.Module, path: Path, fmt: str, example: torch.Tensor | None = None
) -> Path:
    """Save ``model`` as ``fmt``. torch.export traces ``example``, a batch of the model's input;
    left out, a digits-shaped batch is used."""
    if fmt == "torchscript":
        jit.save(jit.script(model), path)
    elif fmt == "torch_export":
        example = _digits_example(model) if example is None else example[:4]
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        with open(path, "wb") as f:  # a file object: given a path, torch wants a .pt2 suffix
            torch.export.save(program, f)
    elif fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        raise ValueError(f"unknown teacher format {fmt!r}")
    return path


def _digits_example(model: nn.Module) -> torch.Tensor:
    first = next(model.parameters())
    return torch.zeros(4, 1, 8, 8) if first.ndim == 4 else torch.zeros(4, first.shape[1])


Array = np.ndarray | torch.Tensor


def save_npz(path: Path, x: Array, y: Array | None = None) -> Path:
    arrays = {"x": np.asarray(x)} | ({} if y is None else {"y": np.asarray(y)})
    with open(path, "wb") as f:  # a file object, or numpy appends ".npz" to the name
        np.savez(f, **arrays)
    return path


def save_safetensors_data(path: Path, x: Array, y: Array | None = None) -> Path:
    tensors = {"x": torch.as_tensor(x)} | ({} if y is None else {"y": torch.as_tensor(y)})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def save_csv(
    path: Path,
    x: Array,
    y: Array | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Features as columns f0, f1, ...; ``label`` last, as ids or as ``class_names[id]``."""
    flat = np.asarray(x).reshape(len(x), -1).tolist()
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{i}" for i in range(len(flat[0]))] + ([] if y is None else ["label"]))
        for i, row in enumerate(flat):
            label = [] if y is None else [class_names[int(y[i])] if class_names else int(y[i])]
            writer.writerow([repr(v) for v in row] + label)
    return path


def job_spec(
    student: dict | None = None,
    teacher_arch: dict | None = None,
    baseline: bool = False,
    *,
    task: str = "classification",
    data: dict | None = None,
    losses: dict | None = None,
    sweep: dict | None = None,
    export: list[str] | None = None,
    name: str | None = None,
    **hp: Any,
) -> JobSpec:
    """A job spec as the API stores it, every default from ``JobSpec``: a small MLP student on
    ``file_teacher`` and ``file_train``; ``data`` adds to the data's fields, ``hp`` sets
    hyperparameters."""
    given = {
        "name": name,
        "task": task,
        "teacher": {"file_id": "file_teacher", "arch": teacher_arch},
        "student": student or {"arch": "mlp", "hidden_sizes": [32]},
        "data": {"train_file_id": "file_train"} | (data or {}),
        "hyperparameters": hp,
        "losses": losses or {},
        "baseline": baseline,
        "sweep": sweep,
        "export": export or [],
    }
    return JobSpec.model_validate(given)


class MemoryBomb(nn.Module):
    """``teacher``, but its forward first reserves ``bomb_bytes`` of memory it never touches:
    harmless to a process with room in its address space, out of memory in one bounded below
    that. Save it as TorchScript (``save_teacher(..., "torchscript")``)."""

    def __init__(self, teacher: nn.Module, bomb_bytes: int):
        super().__init__()
        self.teacher = teacher
        self.floats = bomb_bytes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reserved = torch.empty([self.floats])
        return self.teacher(x) + reserved[:1].zero_()


class Thief(nn.Module):
    """``teacher``, but its forward first copies the file ``secret`` over the file ``victim``
    through ``aten::from_file`` (shared: a write to the tensor is a write to the file), as the
    security review's teacher did with the database and another team's upload."""

    def __init__(self, teacher: nn.Module, secret: Path, victim: Path, size: int):
        super().__init__()
        self.teacher, self.secret, self.victim, self.size = teacher, str(secret), str(victim), size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stolen = torch.from_file(self.secret, False, self.size, dtype=torch.uint8)
        target = torch.from_file(self.victim, True, self.size, dtype=torch.uint8)
        target.copy_(stolen)
        return self.teacher(x) + target[:1].float().sum() * 0  # used, so it is not dropped
