"""Hyperparameter sweeps: the grid of runs one job trains, and how the best run is chosen."""

import itertools
from dataclasses import dataclass, field
from typing import Any

import torch

from jobspec import Sweep

SWEPT = ("temperature", "alpha", "learning_rate")  # the spec's order, and the rows' keys


def combinations(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination of the swept values, in a fixed order (the spec's lists, nested)."""
    lists = {name: getattr(sweep, name) for name in SWEPT if getattr(sweep, name)}
    grid = itertools.product(*lists.values())
    return [dict(zip(lists, values, strict=True)) for values in grid]


def better(row: dict, best: dict | None) -> bool:
    """Whether ``row`` beats ``best`` on validation: higher accuracy (lower KL to the teacher
    breaking ties) when the validation data has labels, else lower KL. For regression, lower
    MSE on the labels (lower MSE to the teacher breaking ties, or alone without labels). Exact
    ties keep the earlier run."""
    if best is None:
        return True
    if "val_agreement_mse" in row:  # regression: lower MSE on the labels, else to the teacher
        error, best_error = row["val_mse"], best["val_mse"]
        if error is not None and best_error is not None and error != best_error:
            return error < best_error
        return row["val_agreement_mse"] < best["val_agreement_mse"]
    accuracy, best_accuracy = row["val_accuracy"], best["val_accuracy"]
    if accuracy is not None and best_accuracy is not None and accuracy != best_accuracy:
        return accuracy > best_accuracy
    return row["val_kl"] < best["val_kl"]


@dataclass
class SweepState:
    """The finished runs' rows and the best student so far (a CPU copy of its weights, and its
    early-stopping state), checkpointed with the run under way."""

    rows: list[dict] = field(default_factory=list)
    best: int | None = None  # index into rows
    best_model: dict[str, torch.Tensor] | None = None
    best_stopper: dict | None = None
    seconds: float = 0.0  # training time of the finished runs

    def add(self, row: dict, model: torch.nn.Module, stopper: dict | None, seconds: float) -> None:
        if better(row, None if self.best is None else self.rows[self.best]):
            self.best = len(self.rows)
            self.best_model = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
            self.best_stopper = stopper
        self.rows.append(row)
        self.seconds += seconds

    def table(self) -> list[dict]:
        return [row | {"chosen": i == self.best} for i, row in enumerate(self.rows)]

    def state_dict(self) -> dict:
        return {
            "rows": self.rows,
            "best": self.best,
            "best_model": self.best_model,
            "best_stopper": self.best_stopper,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state(cls, state: dict) -> "SweepState":
        return cls(**state)
