"""A 1-D cnn student end to end: digits as 64-sample signals, distilled from an MLP teacher."""

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.teachers import Digits, accuracy, job_spec
from worker.engine import load_student, run_job

# TorchScript is deprecated in torch 2.x; the contract still promises it (student.pt).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

STUDENT = {
    "arch": "cnn",
    "channels": [8, 16],
    "kernel_size": 5,
    "hidden_sizes": [32],
    "activation": "relu",
    "dropout": 0.0,
}


def test_an_mlp_teacher_distils_into_a_1d_cnn(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(student=STUDENT, epochs=10, learning_rate=0.005)

    result = run_job(mlp_digits.job(tmp_path, spec))

    metrics = result.metrics
    assert metrics["student_accuracy"] >= 0.9 * metrics["teacher_accuracy"]
    out = tmp_path / "out"
    info = json.loads((out / "student.json").read_text())
    assert info["arch"] == STUDENT and info["input_shape"] == [64]
    # student.pt takes the (N, L) data as it is, and agrees with the rebuilt student
    x = torch.from_numpy(mlp_digits.trained.x_val)
    deployed = torch.jit.load(str(out / "student.pt"))
    with torch.no_grad():
        torch.testing.assert_close(load_student(out)(x), deployed(x))
    assert accuracy(deployed, x, mlp_digits.trained.y_val) == pytest.approx(
        metrics["student_accuracy"]
    )
