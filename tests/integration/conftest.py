"""A real teacher and real data for the integration tests: a CNN trained on sklearn's digits."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.teachers import save_npz, save_teacher, train_digits_teacher


@dataclass
class Digits:
    teacher: Path  # TorchScript
    train: Path  # npz with x, y
    validation: Path
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    teacher_test_accuracy: float


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    folder = tmp_path_factory.mktemp("digits")
    trained = train_digits_teacher(kind="cnn")
    teacher = save_teacher(trained.model, folder / "teacher.pt", "torchscript")
    return Digits(
        teacher=teacher,
        train=save_npz(folder / "train.npz", trained.x_train, trained.y_train),
        validation=save_npz(folder / "val.npz", trained.x_val, trained.y_val),
        x_val=trained.x_val,
        y_val=trained.y_val,
        x_test=trained.x_test,
        y_test=trained.y_test,
        teacher_test_accuracy=trained.test_accuracy,
    )
