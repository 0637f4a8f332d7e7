"""Measurements on the validation data: accuracy, agreement, KL (classification), MSE and R²
(regression), and latency."""

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Float32 logits for all of ``x``, in batches; an nn.Module is put in eval mode meanwhile."""
    module = model if isinstance(model, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    logits = torch.cat([model(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])
    if module is not None:
        module.train(was_training)
    return logits


def accuracy(logits: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    if labels is None:
        return None
    return (logits.argmax(dim=1) == labels).float().mean().item()


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Share of inputs where the student's top-1 class is the teacher's."""
    return (student_logits.argmax(dim=1) == teacher_logits.argmax(dim=1)).float().mean().item()


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean KL(teacher || student) at temperature 1."""
    return F.kl_div(
        F.log_softmax(student_logits, dim=1),
        F.log_softmax(teacher_logits, dim=1),
        log_target=True,
        reduction="batchmean",
    ).item()


def mse(outputs: torch.Tensor, targets: torch.Tensor | None) -> float | None:
    """Mean squared error over every row and output."""
    if targets is None:
        return None
    return F.mse_loss(outputs.float(), targets.float()).item()


def r2(outputs: torch.Tensor, targets: torch.Tensor | None) -> float | None:
    """The coefficient of determination, per output then averaged (scikit-learn's
    ``uniform_average``); an output whose targets are constant counts as 1.0 if predicted
    exactly, else 0.0, as there."""
    if targets is None:
        return None
    targets = targets.float()
    residual = ((targets - outputs.float()) ** 2).sum(dim=0)
    total = ((targets - targets.mean(dim=0)) ** 2).sum(dim=0)
    constant = total == 0
    scores = torch.where(
        constant, (residual == 0).float(), 1 - residual / torch.where(constant, 1.0, total)
    )
    return scores.mean().item()


@torch.no_grad()
def latency_ms(
    forward: Callable[[torch.Tensor], object],
    example: torch.Tensor,
    warmup: int = 5,
    runs: int = 30,
    budget_seconds: float = 2.0,
) -> float:
    """Median wall time of one forward pass on ``example`` (a batch of one), after warm-up.

    Stops early (after at least 5 runs) once ``budget_seconds`` is spent, so a slow teacher does
    not stall the job. On CUDA each run is synchronized, or we would time only the launch.
    """

    def sync() -> None:
        if example.is_cuda:
            torch.cuda.synchronize(example.device)

    for _ in range(warmup):
        forward(example)
    sync()
    times: list[float] = []
    deadline = time.perf_counter() + budget_seconds
    while len(times) < runs and (len(times) < 5 or time.perf_counter() < deadline):
        start = time.perf_counter()
        forward(example)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
