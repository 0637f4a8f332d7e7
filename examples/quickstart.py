"""Quickstart: distil a digits CNN into a small MLP through a local Distillery.

It starts `distill up`, trains a teacher, and then, with the Python client (`distillery`),
uploads it with its data, submits a job, follows it live, downloads the student (each file's
sha256 checked) and scores it with `torch.jit.load` alone on a test split the service never saw.

Everything it makes stays in ./distillery-demo/ (the teacher, its data, the student, its metrics
and model card, the service's log), for the README's next steps; it names the folder at its end.

    scripts/demo.sh          # or: .venv/bin/python examples/quickstart.py
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from rich.console import Console
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from distillery import Client, DistilleryError, Job
from distillery.display import JobProgressBar, metrics_table

ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = ROOT / "distillery-demo"
SEED = 0
console = Console()


# --- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    distill = Path(sys.executable).with_name("distill")
    command = [str(distill) if distill.exists() else "distill", "up", "--port", str(port)]
    console.print(f"[bold]Starting[/] {' '.join(command[1:])} (log: {log_path})")
    with log_path.open("wb") as log:
        # Its own session, so a Ctrl-C here reaches it once, from stop_service, not twice.
        return subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(service: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError("distill up stopped before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"distill up was not ready within 120 s:\n{tail(log_path)}")


def admin_key() -> str:
    if key := os.environ.get("DISTILL_ADMIN_KEY"):
        return key
    return (ROOT / "var" / "admin_key").read_text().strip()


def stop_service(service: subprocess.Popen[bytes], log_path: Path) -> bool:
    """SIGINT, as a person at the terminal would; True when it exits cleanly, else show its log."""
    if service.poll() is None:
        service.send_signal(signal.SIGINT)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)  # its worker too: the group is its own
            service.wait()
            console.print(f"[red]distill up ignored SIGINT for 60 s; killed.[/]\n{tail(log_path)}")
            return False
    if service.returncode != 0:
        console.print(f"[red]distill up exited with {service.returncode}.[/]\n{tail(log_path)}")
        return False
    console.print("[bold]Stopped[/] distill up cleanly.")
    return True


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the teacher ------------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


Split = tuple[torch.Tensor, torch.Tensor]


def digits_splits() -> tuple[Split, Split, Split]:
    """8x8 digits as (N, 1, 8, 8) floats in [0, 1]; 70/15/15 train/validation/test."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SEED
    )
    pairs = [(x_train, y_train), (x_val, y_val), (x_test, y_test)]
    train, val, test = ((torch.from_numpy(a), torch.from_numpy(b)) for a, b in pairs)
    return train, val, test


def accuracy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        return (model(split[0]).argmax(dim=1) == split[1]).float().mean().item()


def train_teacher(train: Split, epochs: int = 30) -> nn.Module:
    # A model this small gains nothing from more threads, and they thrash on a busy CPU
    # (the service's worker trains on the same machine), where one thread is far faster.
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = train
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def save_npz(path: Path, split: Split) -> Path:
    np.savez(path, x=split[0].numpy(), y=split[1].numpy())
    return path


# --- the report -------------------------------------------------------------------------------


def report(job: Job, teacher_test: float, student_test: float) -> None:
    table = metrics_table(job)
    table.add_section()
    table.add_row("teacher accuracy (held-out test)", f"{teacher_test:.2%}")
    table.add_row("[bold]downloaded student.pt (held-out test)[/]", f"[bold]{student_test:.2%}[/]")
    console.print(table)


# --- the walk-through -------------------------------------------------------------------------


def prepare_teacher(work: Path, train: Split, test: Split) -> tuple[Path, float]:
    console.print(f"[bold]Training[/] the teacher CNN on {len(train[0])} digits")
    started = time.monotonic()
    teacher = train_teacher(train)
    teacher_test = accuracy(teacher, test)
    params = sum(p.numel() for p in teacher.parameters())
    elapsed = time.monotonic() - started
    console.print(f"  {params:,} parameters, test accuracy {teacher_test:.2%}, {elapsed:.1f} s")
    path = work / "teacher.pt"
    torch.jit.save(torch.jit.script(teacher), str(path))
    return path, teacher_test


def distil(client: Client, teacher: Path, train: Path, val: Path) -> Job:
    """Upload the teacher and its data, submit the job, follow it live to its end."""
    console.print("[bold]Uploading[/]")
    job = client.distil(
        teacher,
        train,
        val,
        name="digits-quickstart",
        student={"arch": "mlp", "hidden_sizes": [64]},
        # The README says why these: at the default learning rate the student is still climbing.
        hyperparameters={
            "epochs": 20,
            "learning_rate": 0.02,
            "lr_schedule": "cosine",
            "temperature": 4.0,
            "alpha": 0.7,
        },
        baseline=True,
        on_upload=lambda path, f, _reused: console.print(
            f"  {f.purpose:8} {path.name:14} -> {f.id} ({f.format})"
        ),
    )
    console.print(f"[bold]Submitted[/] {job.id}; following its events")
    with JobProgressBar(console) as bar:
        return client.jobs.wait(job.id, on_event=bar)


def walk_through(base_url: str, service: subprocess.Popen[bytes], log: Path, work: Path) -> int:
    train, val, test = digits_splits()
    teacher, teacher_test = prepare_teacher(work, train, test)  # while the service boots
    wait_ready(service, base_url, log)
    console.print(f"[bold]Ready[/] at {base_url}")
    # Client() alone finds a `distill up` run from the same folder (./var/url, ./var/admin_key);
    # this script may run from anywhere, so it says where.
    with Client(base_url, admin_key()) as client:
        job = distil(
            client, teacher, save_npz(work / "train.npz", train), save_npz(work / "val.npz", val)
        )
        if job.status != "succeeded":
            error = job.error.code + ": " + job.error.message if job.error else ""
            console.print(f"[red]Job {job.status}[/] {error}")
            return 1
        student_dir = work / "student"
        console.print(f"[bold]Downloading[/] artifacts into {student_dir}")
        # Each file is checked against the sha256 the server lists before it is kept.
        for path in client.jobs.download_all(job.id, student_dir):
            console.print(f"  {path.name:20} {path.stat().st_size:>10,} bytes  sha256 ok")
    student = torch.jit.load(str(student_dir / "student.pt")).eval()
    report(job, teacher_test, accuracy(student, test))
    return 0


def main() -> int:
    port = free_port()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)  # an earlier run's: this one's alone afterwards
    DEMO_DIR.mkdir()
    log = DEMO_DIR / "distill-up.log"
    service = start_service(port, log)
    try:
        status = walk_through(f"http://127.0.0.1:{port}", service, log, DEMO_DIR)
    except (RuntimeError, DistilleryError) as exc:
        console.print(f"[red]error:[/] {exc}")
        status = 1
    except KeyboardInterrupt:
        status = 130
    finally:
        clean = stop_service(service, log)
    kept = ", ".join(sorted(p.name + "/" * p.is_dir() for p in DEMO_DIR.iterdir()))
    console.print(f"The demo's files ({kept}) are in:", soft_wrap=True)
    console.print(os.path.relpath(DEMO_DIR) + "/", highlight=False, soft_wrap=True)
    return status if clean else 1


if __name__ == "__main__":
    sys.exit(main())
