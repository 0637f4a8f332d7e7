"""Early stopping on a validation metric. It keeps the counters; the training run keeps the best
epoch's weights (``TrainingRun.best_weights``), so that they are held once."""

HIGHER_IS_BETTER = {"val_accuracy": True, "val_loss": False, "val_perplexity": False}


class EarlyStopping:
    """Watches ``metric`` at every epoch end; ``should_stop`` once it has not improved by more
    than ``min_delta`` for ``patience`` epochs in a row."""

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0):
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.stopped_early = False

    def update(self, epoch: int, value: float) -> bool:
        """Record ``epoch``'s value; True if it is the best so far (keep its weights)."""
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if HIGHER_IS_BETTER[self.metric]:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stopped_early": self.stopped_early,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs, self.stopped_early = state["bad_epochs"], state["stopped_early"]
