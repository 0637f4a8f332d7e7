"""A real regression set that ships offline (scikit-learn's diabetes: 442 patients, 10 features,
disease progression after a year) and a small MLP teacher trained on it in seconds."""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch import nn

VALIDATION_ROWS = 100


@dataclass
class TrainedRegressor:
    model: nn.Module
    x_train: np.ndarray
    y_train: np.ndarray  # (N,), standardized
    x_val: np.ndarray
    y_val: np.ndarray


def diabetes(seed: int = 0) -> tuple[np.ndarray, ...]:
    """Standardized features and target, split into (x_train, y_train, x_val, y_val)."""
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:VALIDATION_ROWS], order[VALIDATION_ROWS:]
    return x[train], y[train], x[val], y[val]


def train_diabetes_teacher(seed: int = 0, steps: int = 200) -> TrainedRegressor:
    """A 10-32-1 MLP, trained full-batch and briefly (on 342 rows, longer overfits)."""
    x_train, y_train, x_val, y_val = diabetes(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.003, weight_decay=0.1)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)[:, None]
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return TrainedRegressor(model.eval(), x_train, y_train, x_val, y_val)


def r2(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x))[:, 0].numpy()
    return float(1 - ((y - predicted) ** 2).sum() / ((y - y.mean()) ** 2).sum())
