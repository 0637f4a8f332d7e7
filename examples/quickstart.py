"""Quickstart: distil a digits CNN into a small MLP through a local Distillery.

It starts `distill up`, trains a teacher, uploads it with its data over HTTP, follows the job
live, downloads the student and checks it with `torch.jit.load` alone on a test split the service
never saw.

    scripts/demo.sh          # or: .venv/bin/python examples/quickstart.py
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
STUDENT_DIR = ROOT / "student"
SEED = 0
FINAL = {"succeeded", "failed", "cancelled"}
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


# --- the API ----------------------------------------------------------------------------------


def check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
        detail = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        detail = response.text[:500]
    raise RuntimeError(f"{response.request.method} {response.request.url.path} -> {detail}")


def upload(client: httpx.Client, path: Path, purpose: str) -> dict[str, Any]:
    with path.open("rb") as fh:
        file: dict[str, Any] = check(
            client.post("/v1/files", files={"file": (path.name, fh)}, data={"purpose": purpose})
        )
    console.print(f"  {purpose:8} {path.name:14} -> {file['id']} ({file['format']})")
    return file


def sse_events(client: httpx.Client, job_id: str, after: str | None) -> Iterator[dict[str, Any]]:
    """The job's events as Server-Sent Events, oldest first; ends when the server closes."""
    params = {"after": after} if after else {}
    headers = {"Accept": "text/event-stream"}
    timeout = httpx.Timeout(10, read=600)
    url = f"/v1/jobs/{job_id}/events"
    with client.stream("GET", url, params=params, headers=headers, timeout=timeout) as response:
        if not response.is_success:
            response.read()
            check(response)
        data: list[str] = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                yield json.loads("\n".join(data))
                data = []


def follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Drive a progress bar from the live events until the job is final, then return it."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    last_event: str | None = None
    latest: dict[str, float] = {}  # loss and accuracy come on some events only; keep the last
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("queued", total=None, stats="")
        while True:
            for event in sse_events(client, job_id, last_event):
                last_event = event["id"]
                show_event(progress, bar, event, latest)
            job: dict[str, Any] = check(client.get(f"/v1/jobs/{job_id}"))
            if job["status"] in FINAL:
                return job
            # The stream closed early (a restart, a proxy): pick up after the last event seen.
            time.sleep(1)


def show_event(
    progress: Progress, bar: Any, event: dict[str, Any], latest: dict[str, float]
) -> None:
    data = event.get("data") or {}
    latest.update({k: data[k] for k in ("train_loss", "val_accuracy") if data.get(k) is not None})
    if event["type"] == "progress":
        stats = [f"step {data['step']}/{data['total_steps']}"]
        # Curve points (losses) are the distilled student's; the baseline's run has none.
        if "train_loss" in latest and data.get("phase", "student") == "student":
            stats.append(f"loss {latest['train_loss']:.4f}")
        if "val_accuracy" in latest:
            stats.append(f"val acc {latest['val_accuracy']:.2%}")
        if data.get("eta_seconds") is not None:
            stats.append(f"eta {data['eta_seconds']:.0f}s")
        # The epoch counts within the phase (the student, then the baseline); the bar and the
        # steps span the whole job.
        progress.update(
            bar,
            description=f"{data.get('phase', 'student')} epoch {data['epoch']}/{data['epochs']}",
            total=data["total_steps"],
            completed=data["step"],
            stats="  ".join(stats),
        )
    elif event["type"] == "status" or (
        event["type"] == "log" and event["level"] in ("warning", "error")
    ):
        # Info-level logs (one per epoch and phase) stay in the job's events, not on screen.
        style = {"warning": "yellow", "error": "red"}.get(event["level"], "dim")
        progress.console.print(f"  [{style}]{event['type']:8}[/] {event['message']}")


def download_artifacts(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every artifact into ./student/, each checked against the sha256 the listing promises."""
    STUDENT_DIR.mkdir(exist_ok=True)
    listing = check(client.get(f"/v1/jobs/{job_id}/artifacts", params={"limit": 100}))["data"]
    for artifact in listing:
        name = artifact["name"]
        if Path(name).name != name:
            raise RuntimeError(f"refusing artifact name {name!r}: not a plain file name")
        digest = hashlib.sha256()
        with (
            client.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response,
            (STUDENT_DIR / name).open("wb") as out,
        ):
            if not response.is_success:
                response.read()
                check(response)
            for chunk in response.iter_bytes():
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != artifact["sha256"]:
            raise RuntimeError(f"{name}: sha256 {digest.hexdigest()} != {artifact['sha256']}")
        console.print(f"  {name:20} {artifact['bytes']:>10,} bytes  sha256 ok")
    return listing


# --- the report -------------------------------------------------------------------------------


def percent(v: float) -> str:
    return f"{v:.2%}"


ROWS = [
    ("teacher_accuracy", "teacher accuracy (validation)", percent),
    ("student_accuracy", "student accuracy (validation)", percent),
    ("baseline_accuracy", "same student, labels only (validation)", percent),
    ("agreement", "top-1 agreement with the teacher", percent),
    ("kl_divergence", "KL(teacher ‖ student), T=1", "{:.4f}".format),
    ("teacher_params", "teacher parameters", "{:,}".format),
    ("student_params", "student parameters", "{:,}".format),
    ("compression_ratio", "compression", "{:.1f}x".format),
    ("student_size_bytes", "student size", lambda v: f"{v / 1024:.1f} KiB"),
    ("teacher_latency_ms", "teacher latency (batch 1)", "{:.3f} ms".format),
    ("student_latency_ms", "student latency (batch 1)", "{:.3f} ms".format),
    ("speedup", "speedup", "{:.1f}x".format),
    ("train_seconds", "training time", "{:.1f} s".format),
]


def report(job: dict[str, Any], teacher_test: float, student_test: float) -> None:
    table = Table(title=f"{job['name']} ({job['id']})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    metrics = job["metrics"] or {}
    for key, label, fmt in ROWS:
        table.add_row(label, fmt(metrics[key]) if metrics.get(key) is not None else "-")
    table.add_section()
    table.add_row("teacher accuracy (held-out test)", percent(teacher_test))
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


def distil(client: httpx.Client, teacher: Path, train: Path, val: Path) -> dict[str, Any]:
    console.print("[bold]Uploading[/]")
    teacher_file = upload(client, teacher, "teacher")
    train_file = upload(client, train, "dataset")
    val_file = upload(client, val, "dataset")
    spec = {
        "name": "digits-quickstart",
        "teacher": {"file_id": teacher_file["id"]},
        "student": {"arch": "mlp", "hidden_sizes": [64]},
        "data": {"train_file_id": train_file["id"], "validation_file_id": val_file["id"]},
        "hyperparameters": {"epochs": 20, "learning_rate": 0.005, "temperature": 4.0, "alpha": 0.7},
        "baseline": True,
    }
    job = check(client.post("/v1/jobs", json=spec))
    console.print(f"[bold]Submitted[/] {job['id']}; following its events")
    return follow(client, job["id"])


def walk_through(base_url: str, service: subprocess.Popen[bytes], log: Path, work: Path) -> int:
    train, val, test = digits_splits()
    teacher, teacher_test = prepare_teacher(work, train, test)  # while the service boots
    wait_ready(service, base_url, log)
    console.print(f"[bold]Ready[/] at {base_url}")
    headers = {"Authorization": f"Bearer {admin_key()}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        job = distil(
            client, teacher, save_npz(work / "train.npz", train), save_npz(work / "val.npz", val)
        )
        if job["status"] != "succeeded":
            error = job.get("error") or {}
            console.print(
                f"[red]Job {job['status']}[/]: {error.get('code')}: {error.get('message')}"
            )
            return 1
        console.print(f"[bold]Downloading[/] artifacts into {STUDENT_DIR}")
        download_artifacts(client, job["id"])
    student = torch.jit.load(str(STUDENT_DIR / "student.pt")).eval()
    report(job, teacher_test, accuracy(student, test))
    return 0


def main() -> int:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="distill-quickstart-") as tmp:
        work = Path(tmp)
        log = work / "distill-up.log"
        service = start_service(port, log)
        try:
            status = walk_through(f"http://127.0.0.1:{port}", service, log, work)
        except (RuntimeError, httpx.HTTPError) as exc:
            console.print(f"[red]error:[/] {exc}")
            status = 1
        except KeyboardInterrupt:
            status = 130
        finally:
            clean = stop_service(service, log)
    return status if clean else 1


if __name__ == "__main__":
    sys.exit(main())
