"""A real teacher and real data for the integration tests: the session's CNN trained on sklearn's
digits (tests/helpers/teachers.py), as TorchScript and npz files; and, for a module that runs a
deployment of its own (a ``deployment`` fixture, tests/integration/cluster.py), those files
uploaded to it."""

import pytest

from tests.helpers.teachers import Digits, save_digits
from tests.integration import flow
from tests.integration.cluster import Cluster

__all__ = ["Digits"]  # the integration tests annotate with it


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return save_digits(tmp_path_factory.mktemp("digits"), "cnn", formats=("torchscript",))


@pytest.fixture(scope="module")
def files(deployment: Cluster, digits: Digits) -> dict[str, str]:
    """The digits teacher and data on the module's own deployment, by role."""
    return {
        "teacher": flow.upload(deployment.admin, digits.teacher, "teacher")["id"],
        "train": flow.upload(deployment.admin, digits.train, "dataset")["id"],
        "validation": flow.upload(deployment.admin, digits.validation, "dataset")["id"],
    }
