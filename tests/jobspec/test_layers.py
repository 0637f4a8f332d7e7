"""The layer indices the spec checks without the teacher; the engine checks them against the
teacher's depth (tests/worker/engine/test_students.py, test_layer_losses.py, test_hf.py)."""

import pytest
from pydantic import ValidationError

from jobspec import FromTeacherArch, HiddenLoss


@pytest.mark.parametrize("layers", [[], [-1], [2, 1], [1, 1], [1024]])
def test_from_teacher_needs_increasing_teacher_layer_indices(layers: list[int]) -> None:
    with pytest.raises(ValidationError):
        FromTeacherArch(arch="from_teacher", layers=layers)

    assert FromTeacherArch(arch="from_teacher", layers=[0, 2, 5]).layers == [0, 2, 5]


@pytest.mark.parametrize("pair", [[-1, 0], [0, -1], [0, 1024]])
def test_a_layer_pair_names_two_layers_from_zero(pair: list[int]) -> None:
    with pytest.raises(ValidationError):
        HiddenLoss.model_validate({"layers": [pair]})

    assert HiddenLoss.model_validate({"layers": [[0, 3]]}).layers == [(0, 3)]
