"""Small real uploads for the submit and validate tests: a safetensors teacher's weights and npz
data with and without labels."""

import io

import numpy as np
import pytest
import safetensors.numpy

from tests.conftest import Client
from tests.helpers.api import upload


def npz(labelled: bool) -> bytes:
    buffer = io.BytesIO()
    x = np.zeros((8, 4), dtype=np.float32)
    if labelled:
        np.savez(buffer, x=x, y=np.array([0, 1] * 4, dtype=np.int64))
    else:
        np.savez(buffer, x=x)
    return buffer.getvalue()


def weights() -> bytes:
    """An 8-parameter MLP teacher's weights (4 inputs, 2 outputs, no hidden layer)."""
    return safetensors.numpy.save({"layers.0.weight": np.zeros((2, 4), dtype=np.float32)})


@pytest.fixture
def files(team: Client) -> dict[str, str]:
    return {
        "teacher": upload(team, "teacher.safetensors", weights(), "teacher"),
        "labelled": upload(team, "train.npz", npz(labelled=True), "dataset"),
        "unlabelled": upload(team, "plain.npz", npz(labelled=False), "dataset"),
    }
