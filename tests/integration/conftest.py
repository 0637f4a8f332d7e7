"""A real teacher and real data for the integration tests: the session's CNN trained on sklearn's
digits (tests/helpers/teachers.py), as TorchScript and npz files."""

import pytest

from tests.helpers.teachers import Digits, save_digits

__all__ = ["Digits"]  # the integration tests annotate with it


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return save_digits(tmp_path_factory.mktemp("digits"), "cnn", formats=("torchscript",))
