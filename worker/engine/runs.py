"""One model being trained (a ``TrainingRun``), and what it is built from: the device, the
precision, the optimizer and each epoch's data order."""

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from jobspec import Hyperparameters
from worker.engine.checkpoint import Weights
from worker.engine.early_stopping import EarlyStopping
from worker.engine.errors import DeviceUnavailable, UnsupportedInput
from worker.engine.job import Phase
from worker.engine.layer_losses import LayerMatching
from worker.engine.reporting import LossMeter
from worker.engine.schedules import Schedules


@dataclass
class TrainingRun:
    """One model being trained: the distilled ``student``, or the labels-only ``baseline``."""

    phase: Phase
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedules: Schedules
    stopper: EarlyStopping | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    matching: LayerMatching | None = None  # the layer-matching losses' projections, if any
    logits: str | None = None  # a sweep run's logit loss, in place of the spec's (language models)
    # On several ranks with ddp: the DistributedDataParallel wrapper the training forward pass
    # goes through (so that backward averages the gradients over the ranks); ``model`` is the
    # plain module inside it.
    wrapper: nn.Module | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken (grad_accumulation_steps batches each)
    seconds: float = 0.0  # training time in earlier sessions of this job
    started: float | None = None  # monotonic time this session started training it
    meter: LossMeter = field(default_factory=LossMeter)
    # Early stopping: the best epoch's weights (on the CPU) while the run goes on past it.
    best_weights: Weights | None = None
    # The current step's values: the schedules' first unless they change (set_step_values).
    temperature: float = field(init=False)
    alpha: float = field(init=False)

    def __post_init__(self) -> None:
        self.temperature, self.alpha = self.schedules.temperature[0], self.schedules.alpha[0]

    def set_step_values(self) -> None:
        """The schedules' values for the step about to be taken (the default path skips this)."""
        values = self.schedules.at(self.step)
        self.temperature, self.alpha = values.temperature, values.alpha
        for group in self.optimizer.param_groups:
            group["lr"] = values.learning_rate

    @property
    def stopped_early(self) -> bool:
        return self.stopper is not None and self.stopper.stopped_early

    def keep_best(self) -> None:
        self.best_weights = {k: _copy(v) for k, v in self.model.state_dict().items()}

    def restore_best(self) -> None:
        """End the run on its best epoch's weights; from here the model holds them."""
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            self.best_weights = None

    def train_seconds(self) -> float:
        running = 0.0 if self.started is None else time.monotonic() - self.started
        return self.seconds + running


def _copy(weight: torch.Tensor) -> torch.Tensor:
    """A CPU copy of ``weight``; a shard (fsdp's DTensor) is copied where it is, as its mesh
    says where its shards live."""
    if isinstance(weight, DTensor):
        return weight.detach().clone()
    return weight.detach().to("cpu", copy=True)


def torch_device(name: str) -> torch.device:
    """The job's device setting (auto, cpu, cuda, cuda:N) as the torch device it trains on."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise DeviceUnavailable(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from e
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise DeviceUnavailable(f"Device {name!r} is not available on this worker.")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype the student's forward passes run in under autocast; None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise UnsupportedInput(
            f"precision fp16 needs a CUDA device, and this job runs on {device}; use bf16 or fp32.",
            code="unsupported_precision",
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UnsupportedInput(
            f"This GPU ({device}) does not support bf16; use fp16 or fp32.",
            code="unsupported_precision",
        )
    if precision not in ("bf16", "fp16"):
        raise UnsupportedInput(
            f"precision {precision!r} is not supported; use fp32, bf16 or fp16.",
            code="unsupported_precision",
        )
    return torch.bfloat16 if precision == "bf16" else torch.float16


def make_optimizer(model: nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    """``model``: what trains, the student with any layer-matching projections."""
    if hp.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=hp.learning_rate, momentum=0.9, weight_decay=hp.weight_decay
        )
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay
        )
    raise UnsupportedInput(
        f"Optimizer {hp.optimizer!r} is not supported; use adamw or sgd.",
        code="unsupported_optimizer",
    )


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch, a function of (seed, epoch) alone, so resuming needs no
    shuffling state. Seeds are < 2**32 and epochs < 2**16, so each pair gets its own stream."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed << 16 | epoch))
