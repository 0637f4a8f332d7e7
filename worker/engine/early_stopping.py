"""Early stopping on a validation metric, keeping a copy of the best epoch's weights."""

import torch
from torch import nn

HIGHER_IS_BETTER = {"val_accuracy": True, "val_loss": False}


class EarlyStopping:
    """Watches ``metric`` at every epoch end; ``should_stop`` once it has not improved by more
    than ``min_delta`` for ``patience`` epochs in a row. The best epoch's weights are kept (on the
    CPU, so a long run costs no GPU memory) for ``restore_best``."""

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0):
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.stopped_early = False

    def update(self, epoch: int, value: float, model: nn.Module) -> None:
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
        else:
            self.bad_epochs += 1

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if HIGHER_IS_BETTER[self.metric]:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def restore_best(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
            "stopped_early": self.stopped_early,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.best_state = state["bad_epochs"], state["best_state"]
        self.stopped_early = state["stopped_early"]
