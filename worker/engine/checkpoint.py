"""The full training state of a job, saved at every epoch end and on cancel, written so that a kill
never leaves half a file. It holds each run's weights once: the model as it stands, and (early
stopping, mid-run) its best epoch's weights only where they differ from it."""

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from worker.engine.artifacts import atomic_write
from worker.engine.job import Phase

# Bumped whenever the fields change: a checkpoint of another version is ignored (a cache, not a
# record: losing it costs time, not the job).
VERSION = 2

Weights = dict[str, torch.Tensor]


@dataclass
class TrainingState:
    spec: dict  # the parts of the job spec that shape training (a different job's is ignored)
    phase: Phase  # the run under way when saved
    epoch: int  # its epochs completed
    step: int  # its optimizer steps taken
    optimizer: dict
    rng: torch.Tensor
    models: dict[Phase, Weights]  # every run started so far, as it stands
    train_seconds: dict[Phase, float]
    history: dict[str, list[dict]]  # per phase, one entry per finished epoch
    # Early stopping's counters per run, and the run under way's best epoch's weights when they
    # are not the model's own (its best epoch is an earlier one).
    early_stopping: dict[Phase, dict] = field(default_factory=dict)
    best_weights: Weights | None = None
    matching: Weights | None = None  # the layer-matching projections of the run under way
    scaler: dict | None = None  # fp16
    cuda_rng: torch.Tensor | None = None
    sweep: dict | None = None  # SweepState.state_dict()
    sweep_run: int | None = None  # the sweep run under way; None in the baseline
    version: int = VERSION


class ForeignCheckpoint(Exception):
    """A checkpoint file of another version of the engine."""


def save_checkpoint(path: Path, state: TrainingState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    plain: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
    atomic_write(path, lambda tmp: torch.save(plain, tmp))


def load_checkpoint(path: Path) -> TrainingState | None:
    """None when there is nothing to resume. weights_only=True: the file is ours, but it sits on
    shared storage, and the state is plain tensors and numbers anyway."""
    if not path.exists():
        return None
    plain = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(plain, dict) or plain.get("version") != VERSION:
        found = plain.get("version") if isinstance(plain, dict) else None
        raise ForeignCheckpoint(f"version {found}, not {VERSION}")
    return TrainingState(**plain)
