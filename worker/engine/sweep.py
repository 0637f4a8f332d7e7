"""Hyperparameter sweeps: the grid of runs one job trains, training them one after the other,
and the best run so far (the task says which is better)."""

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from jobspec import Hyperparameters, Sweep
from worker.engine.checkpoint import TrainingState
from worker.engine.tasks import Ranking

if TYPE_CHECKING:
    from worker.engine.recipe import DistillationRecipe
    from worker.engine.runs import TrainingRun

SWEPT = ("temperature", "alpha", "learning_rate")  # hyperparameters: the spec's order, rows' keys


@dataclass(frozen=True)
class SweepRun:
    """One combination: its hyperparameters and, where the sweep lists logit losses (language
    models), its loss in place of the spec's ``losses.logits``."""

    hp: Hyperparameters
    logits: str | None = None

    def values(self) -> dict[str, Any]:
        """The swept values as the sweep's rows and ``chosen`` report them."""
        swept = {name: getattr(self.hp, name) for name in SWEPT}
        return swept if self.logits is None else swept | {"logits": self.logits}


def sweep_runs(hp: Hyperparameters, sweep: Sweep) -> list[SweepRun]:
    """Every combination of the swept values, in a fixed order (the spec's lists, nested)."""
    names = [*SWEPT, "logits"]
    lists = {name: getattr(sweep, name) for name in names if getattr(sweep, name)}
    runs = []
    for values in itertools.product(*lists.values()):
        update = dict(zip(lists, values, strict=True))
        logits = update.pop("logits", None)
        runs.append(SweepRun(hp.model_copy(update=update), logits))
    return runs


def chosen_values(row: dict) -> dict[str, Any]:
    """The winning run's swept values, read from its row."""
    return {name: row[name] for name in (*SWEPT, "logits") if name in row}


@dataclass
class SweepState:
    """The finished runs' rows and the best student so far (a CPU copy of its weights, and its
    early-stopping counters), checkpointed with the run under way. Once the sweep is done the
    chosen student holds those weights, and the state lets go of its copy."""

    task: Ranking
    rows: list[dict] = field(default_factory=list)
    best: int | None = None  # index into rows
    best_model: dict[str, torch.Tensor] | None = None
    best_stopper: dict | None = None
    seconds: float = 0.0  # training time of the finished runs

    def add(self, row: dict, model: torch.nn.Module, stopper: dict | None, seconds: float) -> None:
        if self.best is None or self.task.better(row, self.rows[self.best]):
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
    def from_state(cls, task: Ranking, state: dict) -> "SweepState":
        return cls(task, **state)


def train_sweep(
    recipe: "DistillationRecipe", runs: list[SweepRun], checkpoint: TrainingState | None
) -> "TrainingRun":
    """Train one student per combination, in order, and return the best on validation. The
    checkpoint carries the finished runs' rows and the best student so far, so a resumed sweep
    carries on with the run under way (or, in the baseline, with the sweep done)."""
    state = SweepState(recipe.task)
    if checkpoint is not None and checkpoint.sweep is not None:
        state = SweepState.from_state(recipe.task, checkpoint.sweep)
    recipe.sweep_state = state
    if checkpoint is not None and checkpoint.phase == "student" and checkpoint.sweep is None:
        checkpoint = None
    while checkpoint is None or checkpoint.phase == "student":
        i = len(state.rows)
        if i == len(runs):
            checkpoint = None
            break
        recipe.clock.run = i
        resuming = checkpoint is not None and checkpoint.sweep_run == i
        run = recipe.start_run("student", checkpoint if resuming else None, runs[i])
        recipe.runs["student"] = run
        recipe.train_run(run)
        state.add(
            _row(recipe, run, runs[i]),
            run.model,
            None if run.stopper is None else run.stopper.state_dict(),
            run.train_seconds(),
        )
        checkpoint = None
    assert state.best is not None
    chosen = recipe.start_run("student", checkpoint, runs[state.best])
    if checkpoint is None:  # a checkpoint from the baseline holds the chosen student already
        assert state.best_model is not None
        chosen.model.load_state_dict(state.best_model)
        state.best_model = None  # held once, by the chosen student
        if chosen.stopper is not None and state.best_stopper is not None:
            chosen.stopper.load_state_dict(state.best_stopper)
        chosen.epoch, chosen.step = recipe.hp.epochs, recipe.hp.epochs * recipe.steps_per_epoch
    chosen.seconds = state.seconds
    recipe.callbacks.on_log(
        "info", f"Sweep done: run {state.best} of {len(runs)} chosen.", state.rows[state.best]
    )
    return chosen


def _row(recipe: "DistillationRecipe", run: "TrainingRun", settings: SweepRun) -> dict:
    return settings.values() | recipe.sweep_row(run)
