"""Proof of quality: teacher, distilled student and the same student without distillation, on
four data sets that ship offline (three from scikit-learn and mnist1d, generated here), over
several seeds, through the service's HTTP API; and a student distilled from unlabelled data.

    scripts/with-services.sh .venv/bin/python benchmarks/quality.py [--seeds 3] [--quick]

It starts a throwaway Distillery (the API and one worker as real processes, on PostgreSQL and
Redis: ``benchmarks/_service.py``). For each data set it makes one fixed, stratified 60/20/20
train/validation/test split, trains a teacher here (a few seconds on one CPU thread), saves it
as TorchScript and uploads it with the train and validation data (npz). The test split never
leaves this script. Then, for each seed, it submits one job with ``baseline: true`` (the same
student trained on the labels alone, same seed and budget), follows the job's Server-Sent
Events to its final status, downloads ``student.pt`` (checking its sha256) and scores it on
the test split with ``torch.jit.load`` alone.

Every student number comes from those jobs: validation accuracies, ``compression_ratio`` and
``speedup`` from the job's ``metrics``; test accuracy from its downloaded artifact. The
baseline student is not an artifact, so KD and baseline are compared on validation. The
validation curves (``GET /v1/jobs/{id}/metrics`` for the KD student, the job's per-epoch events
for the baseline) are summarised to show both have converged.

mnist1d also gets a 1-D ``cnn`` student (its own row, same teacher, files and budget). And every
data set's main student gets one more job per seed with ``"sweep": {"alpha": [0.0, 0.5, 0.9]}``
and ``baseline: true``: the table shows, per seed, the chosen alpha (``metrics.chosen``), every
run's validation accuracy (``metrics.sweep``), and that the chosen student is never below the
alpha-0 run, which should equal the job's baseline.

Unlabelled: the digits training split is uploaded again with ``x`` only and distilled with
``alpha: 1.0`` (no baseline: there are no labels to train it on), validated on the labelled
validation file, so the job measures the student's accuracy against the teacher's.

A full run writes the table (mean ± std over seeds) between the markers in docs/quality.md and
the plot to docs/quality.png. ``--quick`` (one seed, fewer epochs) is a smoke run: it prints
the table and leaves the docs alone.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import mnist1d.data
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import train_test_split
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._service import distillery
from distillery import Client

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "quality.md"
PLOT = ROOT / "docs" / "quality.png"
START, END = "<!-- results:start -->", "<!-- results:end -->"
SPLIT_SEED = 0  # the data split and the teacher's initialisation; the job seeds vary the student
# The same temperature and mix for every data set: the defaults a user would start from.
KD = {"temperature": 4.0, "alpha": 0.7, "optimizer": "adamw"}

Arrays = tuple[np.ndarray, np.ndarray]


# --- the data sets and their teachers ---------------------------------------------------------


def digits() -> Arrays:
    data = load_digits()
    return (data.images / 16.0).astype(np.float32)[:, None], data.target.astype(np.int64)


def tabular(loader: Callable[..., Any]) -> Callable[[], Arrays]:
    def load() -> Arrays:
        x, y = loader(return_X_y=True)
        return x.astype(np.float32), y.astype(np.int64)

    return load


def mnist1d_data() -> Arrays:
    """mnist1d's default 5,000 synthetic 1-D digit signals (40 samples each, already centred and
    scaled), generated here from the package's templates: ``download=False``, nothing fetched.
    Its own 80/20 split is joined and re-split below like the other data sets."""
    with tempfile.TemporaryDirectory(prefix="mnist1d-") as tmp:
        data = mnist1d.data.get_dataset(
            mnist1d.data.get_dataset_args(),
            path=str(Path(tmp) / "mnist1d.pkl"),
            download=False,
            regenerate=True,
            verbose=False,
        )
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    return x, np.concatenate([data["y"], data["y_test"]]).astype(np.int64)


class Conv1dNet(nn.Module):
    """The mnist1d teacher: four 1-D convolutions (64 channels, three with stride 2) and a
    linear head. Takes ``(N, 40)``, the layout of the uploaded data, and adds the channel."""

    def __init__(self, classes: int, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width * 5, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], 1, -1))


def digits_cnn(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


def wide_mlp(features: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, classes),
    )


@dataclass
class DataSet:
    """One benchmark: the data, how to build and train its teacher, and the job's student and
    budget (the same for the distilled student and the baseline: that is what baseline does)."""

    name: str
    load: Callable[[], Arrays]
    standardize: bool
    teacher: Callable[[int, int], nn.Module]  # (input features, classes) -> an untrained model
    teacher_epochs: int
    student: dict[str, Any]
    hyperparameters: dict[str, Any]
    teacher_lr: float = 1e-3
    # Further students on the same split, teacher and files, each a row of its own:
    # (row label, student, hyperparameters overriding the data set's).
    variants: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)


DATASETS = [
    DataSet(
        name="digits",
        load=digits,
        standardize=False,
        teacher=lambda _features, classes: digits_cnn(classes),
        teacher_epochs=30,
        student={"arch": "mlp", "hidden_sizes": [16]},
        hyperparameters={"epochs": 100, "batch_size": 64, "learning_rate": 0.005},
    ),
    DataSet(
        name="breast_cancer",
        load=tabular(load_breast_cancer),
        standardize=True,
        teacher=wide_mlp,
        teacher_epochs=60,
        student={"arch": "mlp", "hidden_sizes": [8]},
        hyperparameters={"epochs": 60, "batch_size": 32, "learning_rate": 0.003},
    ),
    DataSet(
        name="wine",
        load=tabular(load_wine),
        standardize=True,
        teacher=wide_mlp,
        teacher_epochs=100,
        student={"arch": "mlp", "hidden_sizes": [8]},
        hyperparameters={"epochs": 80, "batch_size": 16, "learning_rate": 0.005},
    ),
    DataSet(
        name="mnist1d",
        load=mnist1d_data,
        standardize=False,  # the generator already centres and scales the whole set
        teacher=lambda _features, classes: Conv1dNet(classes),
        teacher_epochs=40,
        teacher_lr=3e-3,
        student={"arch": "mlp", "hidden_sizes": [256]},  # 40-256-10, as in issue 3
        hyperparameters={"epochs": 200, "batch_size": 64, "learning_rate": 0.001},
        # A conv student on the (N, 40) signals (the cnn arch's 1-D convolutions), same budget.
        variants=[
            (
                "mnist1d, cnn student",
                {"arch": "cnn", "channels": [16, 32], "kernel_size": 5, "hidden_sizes": [64]},
                {},
            )
        ],
    ),
]
UNLABELLED = "digits"  # the data set distilled again from its training inputs alone
# The sweep every data set's main student gets once per seed, in one job: alpha 0 is the
# student trained on the labels alone, so the job's chosen student can never be worse than it
# on validation. Temperature stays at KD's 4.
SWEEP = {"alpha": [0.0, 0.5, 0.9]}


@dataclass
class Splits:
    train: Arrays
    val: Arrays
    test: Arrays

    @property
    def classes(self) -> int:
        return int(self.train[1].max()) + 1


def split(data: DataSet) -> Splits:
    """Stratified 60/20/20; tabular features standardised with the training split's statistics."""
    x, y = data.load()
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=SPLIT_SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SPLIT_SEED
    )
    if data.standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
    return Splits((x_train, y_train), (x_val, y_val), (x_test, y_test))


def accuracy(model: nn.Module, arrays: Arrays) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(arrays[0])).argmax(dim=1).numpy()
    return float((predicted == arrays[1]).mean())


def train_teacher(data: DataSet, splits: Splits) -> nn.Module:
    torch.manual_seed(SPLIT_SEED)
    x, y = (torch.from_numpy(a) for a in splits.train)
    model = data.teacher(int(np.prod(x.shape[1:])), splits.classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=data.teacher_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    for _ in range(data.teacher_epochs):
        model.train()
        for batch in torch.randperm(len(x), generator=generator).split(32):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


# --- the API ----------------------------------------------------------------------------------


def check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    raise RuntimeError(
        f"{response.request.method} {response.request.url.path} -> "
        f"{response.status_code} {response.text[:500]}"
    )


def upload(client: httpx.Client, path: Path, purpose: str) -> str:
    with path.open("rb") as fh:
        files = {"file": (path.name, fh)}
        return str(check(client.post("/v1/files", files=files, data={"purpose": purpose}))["id"])


def save_npz(path: Path, arrays: Arrays) -> Path:
    np.savez(path, x=arrays[0], y=arrays[1])
    return path


def api(client: httpx.Client) -> Client:
    """The Python client on the same server and key: it follows event streams (resuming one
    that breaks off) and downloads with the sha256 checked."""
    key = client.headers["Authorization"].removeprefix("Bearer ")
    return Client(str(client.base_url), key, timeout=60)


def follow(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], list[float]]:
    """Follow the job's event stream to its final status; return the job and the baseline's
    validation accuracy per epoch, read from its per-epoch log events (the metrics endpoint
    holds the KD student's points only)."""
    baseline: dict[int, float] = {}
    with api(client) as distill:
        for event in distill.jobs.events(job_id):
            if event.level in ("warning", "error"):
                print(f"    {event.level}: {event.message}")
            data = event.data or {}
            if event.message.startswith("Baseline epoch ") and "val_accuracy" in data:
                epoch = int(event.message.split()[2].split("/")[0])
                baseline[epoch] = float(data["val_accuracy"])
    job: dict[str, Any] = check(client.get(f"/v1/jobs/{job_id}"))
    return job, [baseline[e] for e in sorted(baseline)]


def student_curve(client: httpx.Client, job_id: str) -> list[float]:
    """The KD student's validation accuracy per epoch, from ``GET /v1/jobs/{id}/metrics``."""
    with api(client) as distill:
        points = distill.jobs.metrics(job_id)
    per_epoch = {p.epoch: p.val_accuracy for p in points if p.val_accuracy is not None}
    return [per_epoch[e] for e in sorted(per_epoch)]


def download_student(client: httpx.Client, job_id: str, folder: Path) -> Path:
    """``student.pt`` of a succeeded job, checked against the sha256 the listing gives."""
    with api(client) as distill:
        return distill.jobs.download(job_id, "student.pt", folder / f"{job_id}-student.pt")


# --- one data set -----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    rows: tuple[int, int, int]  # train, validation, test
    teacher_test: float
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per seed
    # Kept for the unlabelled run on the same data and teacher.
    splits: Splits | None = field(default=None, repr=False)
    file_ids: dict[str, str] = field(default_factory=dict)


def submit_and_collect(
    client: httpx.Client, specs: list[dict[str, Any]], test: Arrays, work: Path
) -> list[dict[str, Any]]:
    """Submit every spec at once (the worker takes them in order), follow each to its end, and
    gather its metrics, curves and the downloaded student's test accuracy."""
    jobs = [check(client.post("/v1/jobs", json=spec)) for spec in specs]
    runs = []
    for spec, submitted in zip(specs, jobs, strict=True):
        job, baseline_curve = follow(client, submitted["id"])
        if job["status"] != "succeeded":
            raise RuntimeError(f"{job['id']} {job['status']}: {job['error']}")
        student = torch.jit.load(str(download_student(client, job["id"], work)))
        run = {"seed": spec["hyperparameters"]["seed"], "job_id": job["id"], "spec": job["spec"]}
        run |= job["metrics"]
        run["job_seconds"] = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
        run["student_test_accuracy"] = accuracy(student, test)
        run["student_curve"] = student_curve(client, job["id"])
        run["baseline_curve"] = baseline_curve
        runs.append(run)
    return runs


def run_dataset(
    client: httpx.Client, data: DataSet, seeds: int, epoch_scale: float, work: Path
) -> tuple[list[Result], Result]:
    """Train and upload the teacher and data, then one job per seed (``baseline: true``) for the
    data set's student and for each variant, and one sweep job per seed for its student. Returns
    the rows (main student first, then the variants) and the sweep."""
    splits = split(data)
    started = time.monotonic()
    teacher = train_teacher(data, splits)
    teacher_path = work / f"{data.name}-teacher.pt"
    torch.jit.save(torch.jit.script(teacher), str(teacher_path))
    # Scored from the saved file, as the service will load it.
    teacher_test = accuracy(torch.jit.load(str(teacher_path)), splits.test)
    rows = (len(splits.train[1]), len(splits.val[1]), len(splits.test[1]))
    print(
        f"{data.name}: {rows[0]}/{rows[1]}/{rows[2]} rows; teacher test accuracy "
        f"{teacher_test:.2%} ({time.monotonic() - started:.1f} s to train)"
    )
    teacher_id = upload(client, teacher_path, "teacher")
    train_id = upload(client, save_npz(work / f"{data.name}-train.npz", splits.train), "dataset")
    val_id = upload(client, save_npz(work / f"{data.name}-val.npz", splits.val), "dataset")
    file_ids = {"teacher": teacher_id, "train": train_id, "validation": val_id}

    def jobs(
        label: str, student: dict[str, Any], overrides: dict[str, Any], extra: dict[str, Any]
    ) -> Result:
        result = Result(label, rows, teacher_test, splits=splits, file_ids=file_ids)
        hyperparameters = KD | data.hyperparameters | overrides
        hyperparameters["epochs"] = max(1, round(hyperparameters["epochs"] * epoch_scale))
        tag = label.replace(", ", "-").replace(" ", "-")
        specs = [
            {
                "name": f"quality-{tag}-seed{seed}",
                "teacher": {"file_id": teacher_id},
                "student": student,
                "data": {"train_file_id": train_id, "validation_file_id": val_id},
                "hyperparameters": hyperparameters | {"seed": seed},
                "baseline": True,
            }
            | extra
            for seed in range(seeds)
        ]
        result.runs = submit_and_collect(client, specs, splits.test, work)
        return result

    results = []
    for label, student, overrides in [(data.name, data.student, {}), *data.variants]:
        result = jobs(label, student, overrides, {})
        if label != data.name:
            print(f"{label}:")
        for run in result.runs:
            print(
                f"  seed {run['seed']} {run['job_id']}: KD val {run['student_accuracy']:.2%} "
                f"test {run['student_test_accuracy']:.2%} | baseline val "
                f"{run['baseline_accuracy']:.2%} | {run['compression_ratio']:.1f}x smaller, "
                f"{run['speedup']:.1f}x faster, {run['train_seconds']:.1f} s"
            )
        results.append(result)

    print(f"{data.name}, sweep {SWEEP}:")
    sweep = jobs(f"{data.name} sweep", data.student, {}, {"sweep": SWEEP})
    for run in sweep.runs:
        row0 = alpha0(run)
        print(
            f"  seed {run['seed']} {run['job_id']}: chosen {run['chosen']} val "
            f"{run['student_accuracy']:.2%} | alpha-0 run val {row0['val_accuracy']:.2%} | "
            f"baseline val {run['baseline_accuracy']:.2%}"
        )
    return results, sweep


def alpha0(run: dict[str, Any]) -> dict[str, Any]:
    """The sweep's alpha = 0 row (the student trained on the labels alone, inside the sweep)."""
    return next(row for row in run["sweep"] if row["alpha"] == 0)


def run_unlabelled(
    client: httpx.Client, data: DataSet, labelled: Result, seeds: int, epoch_scale: float,
    work: Path,
) -> Result:  # fmt: skip
    """The same teacher, student and budget as ``labelled``, but the training split uploaded
    with ``x`` only and ``alpha: 1.0``: the student learns from the teacher's outputs alone."""
    assert labelled.splits is not None
    path = work / f"{data.name}-train-unlabelled.npz"
    np.savez(path, x=labelled.splits.train[0])  # no y
    train_id = upload(client, path, "dataset")
    hyperparameters = KD | data.hyperparameters | {"alpha": 1.0}
    hyperparameters["epochs"] = max(1, round(hyperparameters["epochs"] * epoch_scale))
    specs = [
        {
            "name": f"quality-{data.name}-unlabelled-seed{seed}",
            "teacher": {"file_id": labelled.file_ids["teacher"]},
            "student": data.student,
            "data": {
                "train_file_id": train_id,
                "validation_file_id": labelled.file_ids["validation"],
            },
            "hyperparameters": hyperparameters | {"seed": seed},
        }
        for seed in range(seeds)
    ]
    print(f"{data.name}, unlabelled (x only, alpha 1.0):")
    result = Result(f"{data.name} (unlabelled)", labelled.rows, labelled.teacher_test)
    result.runs = submit_and_collect(client, specs, labelled.splits.test, work)
    for run in result.runs:
        print(
            f"  seed {run['seed']} {run['job_id']}: student val {run['student_accuracy']:.2%} "
            f"({run['student_accuracy'] / run['teacher_accuracy']:.1%} of the teacher's), "
            f"test {run['student_test_accuracy']:.2%}"
        )
    return result


# --- the report -------------------------------------------------------------------------------


def values(result: Result, key: str) -> list[float]:
    return [float(run[key]) for run in result.runs]


def std(xs: list[float]) -> float:
    """The sample standard deviation; 0 for a single seed."""
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def mean_std(
    xs: list[float], scale: float = 100.0, digits: int = 1, unit: str = "", sign: str = ""
) -> str:
    mean = f"{statistics.fmean(xs) * scale:{sign}.{digits}f}"
    if len(xs) < 2:
        return f"{mean}{unit}"
    return f"{mean} ± {std(xs) * scale:.{digits}f}{unit}"


def summary_table(results: list[Result]) -> str:
    lines = [
        "| data set | rows train/val/test | teacher val | teacher test | KD student val "
        "| KD student test | baseline val | KD - baseline (val) | compression | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        gain = [run["student_accuracy"] - run["baseline_accuracy"] for run in r.runs]
        cells = [
            r.name,
            "/".join(map(str, r.rows)),
            f"{statistics.fmean(values(r, 'teacher_accuracy')) * 100:.1f}",  # one teacher
            f"{r.teacher_test * 100:.1f}",
            mean_std(values(r, "student_accuracy")),
            mean_std(values(r, "student_test_accuracy")),
            mean_std(values(r, "baseline_accuracy")),
            mean_std(gain, unit=" pt", sign="+"),
            f"{statistics.fmean(values(r, 'compression_ratio')):.0f}x",  # fixed by the archs
            mean_std(values(r, "speedup"), scale=1, unit="x"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(results: list[Result]) -> str:
    lines = [
        "| data set | seed | job | KD val | KD test | baseline val | teacher params "
        "| student params | speed-up | KD training s | job s (KD + baseline + measuring) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for run in r.runs:
            cells = [
                r.name,
                str(run["seed"]),
                f"`{run['job_id']}`",
                f"{run['student_accuracy'] * 100:.1f}",
                f"{run['student_test_accuracy'] * 100:.1f}",
                "none"
                if run.get("baseline_accuracy") is None
                else f"{run['baseline_accuracy'] * 100:.1f}",
                f"{run['teacher_params']:,}",
                f"{run['student_params']:,}",
                f"{run['speedup']:.1f}x",
                f"{run['train_seconds']:.1f}",
                f"{run['job_seconds']:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def setups(results: list[Result]) -> str:
    """Each data set's student and budget, as the service echoed them in the job's spec."""
    lines = []
    for r in results:
        spec = r.runs[0]["spec"]
        student, hp = spec["student"], spec["hyperparameters"]
        cache = Counter(str(run.get("teacher_cache", "not reported")) for run in r.runs)
        lines.append(
            f"- **{r.name}**: student {describe(student)}; "
            f"{hp['epochs']} epochs, batch {hp['batch_size']}, {hp['optimizer']} lr "
            f"{hp['learning_rate']}, temperature {hp['temperature']}, alpha {hp['alpha']}; "
            f"teacher-output cache: {', '.join(f'{k} {n}x' for k, n in sorted(cache.items()))}."
        )
    return "\n".join(lines)


def describe(student: dict[str, Any]) -> str:
    """An arch spec in a few words, as the job echoed it."""
    if student["arch"] == "cnn":
        return (
            f"`cnn` channels {student['channels']} kernel {student['kernel_size']} (1-D on "
            f"`(N, 40)`), hidden {student['hidden_sizes']}"
        )
    return f"`{student['arch']}` hidden {student['hidden_sizes']}"


def sweep_table(sweeps: list[Result], results: list[Result]) -> str:
    """Per seed: every sweep row's validation accuracy, the chosen alpha and student, the alpha-0
    row, and the baseline the same job trained; with the alpha 0.7 job's baseline of the same seed
    as a check that the baseline is reproducible across jobs."""
    alphas = SWEEP["alpha"]
    lines = [
        "| data set | seed | job | val at alpha " + " / ".join(f"{a:g}" for a in alphas)
        + " | val KL at alpha " + " / ".join(f"{a:g}" for a in alphas)
        + " | chosen alpha | chosen val | alpha-0 run val | chosen >= alpha 0 "
        "| baseline val (this job) | baseline val (alpha 0.7 job) | chosen test |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    main = {r.name: {run["seed"]: run for run in r.runs} for r in results}
    for sweep in sweeps:
        name = sweep.name.removesuffix(" sweep")
        for run in sweep.runs:
            by_alpha = {row["alpha"]: row["val_accuracy"] for row in run["sweep"]}
            kl = {row["alpha"]: row["val_kl"] for row in run["sweep"]}
            zero = alpha0(run)["val_accuracy"]
            other = main.get(name, {}).get(run["seed"])
            held = run["student_accuracy"] >= zero
            cells = [
                name,
                str(run["seed"]),
                f"`{run['job_id']}`",
                " / ".join(f"{by_alpha[a] * 100:.1f}" for a in alphas),
                " / ".join(f"{kl[a]:.3f}" for a in alphas),
                f"{run['chosen']['alpha']:g}",
                f"{run['student_accuracy'] * 100:.1f}",
                f"{zero * 100:.1f}",
                f"yes ({(run['student_accuracy'] - zero) * 100:+.1f})" if held else "**NO**",
                f"{run['baseline_accuracy'] * 100:.1f}",
                f"{other['baseline_accuracy'] * 100:.1f}" if other else "",
                f"{run['student_test_accuracy'] * 100:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_verdicts(sweeps: list[Result], results: list[Result]) -> str:
    """Per data set, computed: did the guarantee hold, and does the alpha-0 run reproduce the
    baseline the same job trained?"""
    main = {r.name: r for r in results}
    lines = []
    for sweep in sweeps:
        name = sweep.name.removesuffix(" sweep")
        n = len(sweep.runs)
        held = sum(run["student_accuracy"] >= alpha0(run)["val_accuracy"] for run in sweep.runs)
        gaps = [alpha0(run)["val_accuracy"] - run["baseline_accuracy"] for run in sweep.runs]
        same = sum(abs(g) < 1e-9 for g in gaps)
        chosen = Counter(f"{run['chosen']['alpha']:g}" for run in sweep.runs)
        fixed = main.get(name)
        lines.append(
            f"- **{name}**: chosen >= alpha-0 run in {held} of {n} seeds; chosen alpha "
            f"{', '.join(f'{a} ({k}x)' for a, k in sorted(chosen.items()))}; chosen student "
            f"{mean_std(values(sweep, 'student_accuracy'))} against the baseline's "
            f"{mean_std(values(sweep, 'baseline_accuracy'))}"
            + (f" and the fixed alpha 0.7 student's {mean_std(values(fixed, 'student_accuracy'))}"
               if fixed else "")
            + f"; the alpha-0 run equals the job's baseline in {same} of {n} seeds"
            + ("." if same == n else f" (alpha-0 minus baseline: "
               f"{', '.join(f'{g * 100:+.1f}' for g in gaps)} points).")
        )  # fmt: skip
    return "\n".join(lines)


def verdicts(results: list[Result]) -> str:
    """One plain sentence per data set: did distillation beat the same student alone?"""
    lines = []
    for r in results:
        gain = [run["student_accuracy"] - run["baseline_accuracy"] for run in r.runs]
        mean = statistics.fmean(gain) * 100
        spread = std(gain) * 100
        wins = sum(g > 0 for g in gain)
        ties = sum(g == 0 for g in gain)
        if mean > spread and mean > 0:
            verdict = "KD beat the baseline"
        elif mean < -spread and mean < 0:
            verdict = "KD did **not** beat the baseline: the student alone did better"
        else:
            verdict = (
                "KD did **not** clearly beat the baseline (the difference is within the noise)"
            )
        lines.append(
            f"- **{r.name}**: {verdict}; mean KD - baseline on validation {mean:+.1f} points "
            f"(± {spread:.1f}), KD ahead in {wins}, tied in {ties}, behind in "
            f"{len(gain) - wins - ties} of {len(gain)} seeds."
        )
    return "\n".join(lines)


def convergence_table(results: list[Result]) -> str:
    """Validation accuracy (mean over seeds) at a quarter, half, three quarters and all of the
    epochs, and the best epoch: the evidence that the budget lets both curves flatten."""
    lines = [
        "| data set | curve | 1/4 of epochs | 1/2 | 3/4 | last epoch | best (epoch) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for label, key in (("KD student", "student_curve"), ("baseline", "baseline_curve")):
            curves = [run[key] for run in r.runs]
            if not curves or not all(curves) or len({len(c) for c in curves}) != 1:
                continue  # not reported (e.g. no baseline), or seeds disagree on the epochs
            mean = [statistics.fmean(at) * 100 for at in zip(*curves, strict=True)]
            epochs = len(mean)
            marks = [max(1, round(epochs * f)) for f in (0.25, 0.5, 0.75)] + [epochs]
            best = max(range(epochs), key=mean.__getitem__)
            cells = [r.name, label, *(f"{mean[e - 1]:.1f} ({e})" for e in marks)]
            cells.append(f"{mean[best]:.1f} ({best + 1})")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def unlabelled_table(unlabelled: Result, labelled: Result) -> str:
    """Per seed and on average: the unlabelled student's accuracy as a share of the teacher's,
    next to the labelled KD student of the same seed."""
    lines = [
        "| seed | job | teacher val | student val | share of teacher (val) | teacher test "
        "| student test | share of teacher (test) | labelled KD student val (alpha 0.7) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_seed = {run["seed"]: run for run in labelled.runs}
    for run in unlabelled.runs:
        reference = by_seed.get(run["seed"])
        cells = [
            str(run["seed"]),
            f"`{run['job_id']}`",
            f"{run['teacher_accuracy'] * 100:.1f}",
            f"{run['student_accuracy'] * 100:.1f}",
            f"{run['student_accuracy'] / run['teacher_accuracy']:.1%}",
            f"{unlabelled.teacher_test * 100:.1f}",
            f"{run['student_test_accuracy'] * 100:.1f}",
            f"{run['student_test_accuracy'] / unlabelled.teacher_test:.1%}",
            f"{reference['student_accuracy'] * 100:.1f}" if reference else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    share_val = [run["student_accuracy"] / run["teacher_accuracy"] for run in unlabelled.runs]
    share_test = [run["student_test_accuracy"] / unlabelled.teacher_test for run in unlabelled.runs]
    cells = [
        "**mean**",
        "",
        f"{statistics.fmean(values(unlabelled, 'teacher_accuracy')) * 100:.1f}",
        mean_std(values(unlabelled, "student_accuracy")),
        mean_std(share_val, unit="%"),
        f"{unlabelled.teacher_test * 100:.1f}",
        mean_std(values(unlabelled, "student_test_accuracy")),
        mean_std(share_test, unit="%"),
        mean_std(values(labelled, "student_accuracy")),
    ]
    lines.append("| " + " | ".join(cells) + " |")
    worst = min(share_val + share_test)
    met = "met" if worst >= 0.95 else "**not met**"
    spec = unlabelled.runs[0]["spec"]
    hp = spec["hyperparameters"]
    return "\n".join([
        *lines,
        "",
        f"The target, at least 95% of the teacher's accuracy: {met} (lowest share over "
        f"seeds and splits {worst:.1%}). Student `{spec['student']['arch']}` hidden "
        f"{spec['student']['hidden_sizes']}; {hp['epochs']} epochs, batch {hp['batch_size']}, "
        f"{hp['optimizer']} lr {hp['learning_rate']}, temperature {hp['temperature']}, alpha "
        f"{hp['alpha']}: the labelled digits jobs' budget, labels swapped for nothing.",
    ])  # fmt: skip


def machine() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        model = names[0] if names else model
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({model}), {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}; one torch thread in the worker and here"
    )


def revision() -> str:
    """The commit measured, and whether the working tree had changes on top of it."""
    git = ["git", "-C", str(ROOT)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit"
    return f"commit `{commit}`" + (" with uncommitted changes" if dirty else "")


def report(
    results: list[Result], sweeps: list[Result], unlabelled: Result | None, command: str,
    seconds: float,
) -> str:  # fmt: skip
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    seeds = len(results[0].runs)
    return "\n".join([
        f"Measured {date} on {machine()}, at {revision()}, in {seconds / 60:.1f} minutes, with",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Mean ± standard deviation over {seeds} job seed(s), in percent accuracy. One fixed split "
        "and one teacher per data set, so the teacher's test accuracy is a single number.",
        "",
        summary_table(results),
        "",
        "Students and budgets (the same for the KD student and its baseline), from the jobs' "
        "specs:",
        "",
        setups(results),
        "",
        "Does distillation earn its keep? Judged on validation, the only split where the baseline "
        "is measured:",
        "",
        verdicts(results),
        "",
        "![teacher, KD student, the alpha sweep's chosen student and baseline accuracy per data "
        "set](quality.png)",
        "",
        "Convergence: validation accuracy (%, mean over seeds) along the way, the KD student's "
        "from `GET /v1/jobs/{id}/metrics`, the baseline's from its per-epoch events:",
        "",
        convergence_table(results),
        "",
        f"### A sweep over alpha {SWEEP['alpha']} (temperature 4)",
        "",
        "One job per data set and seed with `\"sweep\": {\"alpha\": [0.0, 0.5, 0.9]}` and "
        "`baseline: true`, the data set's main student and budget: the job trains the student "
        "once per alpha from the same seed, keeps the best on validation (`metrics.chosen`) and "
        "reports every run in `metrics.sweep` (validation accuracy, and "
        "`val_kl`, KL(teacher ‖ student) at T=1, which breaks ties on accuracy). Alpha 0 is "
        "the student trained on the labels alone, so the chosen student should never be below "
        "it. Accuracies in %; the last column is the chosen student's `student.pt` scored on test:",
        "",
        sweep_table(sweeps, results),
        "",
        sweep_verdicts(sweeps, results),
        "",
        *([
            "### Distilling from unlabelled data (digits)",
            "",
            "The digits training split uploaded again with `x` only (no `y`), `alpha: 1.0`, "
            "validated on the labelled validation file; the same teacher, student and budget as "
            "the digits jobs above. No baseline: there are no labels to train it on.",
            "",
            unlabelled_table(unlabelled, next(r for r in results if r.name == UNLABELLED)),
            "",
        ] if unlabelled else []),
        "<details><summary>Every job</summary>",
        "",
        runs_table(results + sweeps + ([unlabelled] if unlabelled else [])),
        "",
        "</details>",
    ])  # fmt: skip


def write_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else f"# Quality\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = f"{text.rstrip()}\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def plot(results: list[Result], sweeps: list[Result], path: Path) -> None:
    """Grouped bars on validation accuracy: teacher, KD student (alpha 0.7), the alpha sweep's
    chosen student (main students only), baseline; error bars = std over seeds."""
    by_name = {r.name.removesuffix(" sweep"): r for r in sweeps}
    series = [
        ("teacher", "teacher_accuracy", "#4c72b0", results),
        ("KD student (alpha 0.7)", "student_accuracy", "#dd8452", results),
        ("sweep's chosen student (alpha 0/0.5/0.9)", "student_accuracy", "#55a868",
         [by_name.get(r.name) for r in results]),
        ("baseline (same student, labels only)", "baseline_accuracy", "#8c8c8c", results),
    ]  # fmt: skip
    width = 0.2
    fig, ax = plt.subplots(figsize=(9, 4.4), dpi=120)
    lowest = 100.0
    for i, (label, key, colour, rows) in enumerate(series):
        present = [(j, r) for j, r in enumerate(rows) if r is not None]
        means = [statistics.fmean(values(r, key)) * 100 for _, r in present]
        stds = [std(values(r, key)) * 100 for _, r in present]
        lowest = min(lowest, *(m - s for m, s in zip(means, stds, strict=True)))
        xs = [j + (i - 1.5) * width for j, _ in present]
        bars = ax.bar(xs, means, width, yerr=stds, capsize=3, label=label, color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    floor = max(0, 5 * int((lowest - 6) // 5))
    ax.set_ylim(floor, 102)
    ax.set_xticks(range(len(results)), [r.name.replace(", ", ",\n") for r in results])
    ax.set_ylabel(f"validation accuracy, % (axis starts at {floor})")
    seeds = len(results[0].runs)
    ax.set_title(f"Teacher vs distilled student vs baseline, mean ± std over {seeds} seeds", pad=12)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="job seeds per data set")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, half the epochs; print only, docs untouched"
    )
    args = parser.parse_args()
    seeds, epoch_scale = (1, 0.5) if args.quick else (args.seeds, 1.0)
    command = "scripts/with-services.sh .venv/bin/python benchmarks/quality.py " + " ".join(
        sys.argv[1:]
    )

    # One thread here and in the worker: these models are tiny, and on a 2-core machine more
    # threads only spin against each other. The worker reads DISTILL_TORCH_THREADS.
    torch.set_num_threads(1)
    os.environ.setdefault("DISTILL_TORCH_THREADS", "1")
    started = time.monotonic()
    with (
        distillery() as (base, admin_key, _settings),
        tempfile.TemporaryDirectory(prefix="distill-quality-") as tmp,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60
        ) as client,
    ):
        results: list[Result] = []
        sweeps: list[Result] = []
        for data in DATASETS:
            rows, sweep = run_dataset(client, data, seeds, epoch_scale, Path(tmp))
            results += rows
            sweeps.append(sweep)
        digits_data = next(d for d in DATASETS if d.name == UNLABELLED)
        digits_result = next(r for r in results if r.name == UNLABELLED)
        unlabelled = run_unlabelled(
            client, digits_data, digits_result, seeds, epoch_scale, Path(tmp)
        )
    seconds = time.monotonic() - started

    block = report(results, sweeps, unlabelled, command.strip(), seconds)
    print(f"\n{block}")
    if args.quick:
        print("\n--quick: docs/quality.md and docs/quality.png left as they were.")
        return 0
    plot(results, sweeps, PLOT)
    write_doc(block)
    print(f"\nWrote {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
