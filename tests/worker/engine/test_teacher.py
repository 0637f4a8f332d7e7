import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from tests.helpers.teachers import TEACHER_ARCHS, TEACHER_FORMATS, Digits, save_teacher
from worker.engine import ShapeMismatch, TeacherLoadError
from worker.engine.teacher import load_teacher

CPU = torch.device("cpu")
CNN_SHAPE = (1, 8, 8)


def _load(path: Path, fmt: str, arch: dict | None = TEACHER_ARCHS["cnn"], shape=CNN_SHAPE):
    return load_teacher(path, fmt, arch, shape, CPU)


@pytest.mark.parametrize("fmt", TEACHER_FORMATS)
def test_every_format_loads_frozen_and_gives_the_trained_logits(
    cnn_digits: Digits, fmt: str
) -> None:
    x = torch.from_numpy(cnn_digits.trained.x_val[:16])

    teacher = _load(cnn_digits.teachers[fmt], fmt)

    with torch.no_grad():
        torch.testing.assert_close(teacher(x), cnn_digits.trained.model(x))
    assert teacher.num_params == sum(p.numel() for p in cnn_digits.trained.model.parameters())
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert teacher.check(x) == 10


@pytest.mark.parametrize("fmt", TEACHER_FORMATS)
def test_truncated_files_fail_to_load(cnn_digits: Digits, tmp_path: Path, fmt: str) -> None:
    content = cnn_digits.teachers[fmt].read_bytes()
    truncated = tmp_path / "teacher"
    truncated.write_bytes(content[: len(content) // 2])

    with pytest.raises(TeacherLoadError, match="Could not"):
        _load(truncated, fmt)


class _Marker:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_a_pickle_that_would_run_code_is_refused_and_never_run(
    cnn_digits: Digits, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    weights = torch.load(cnn_digits.teachers["state_dict"], weights_only=True)
    torch.save(weights | {"payload": _Marker(marker)}, tmp_path / "evil.pt")

    with pytest.raises(TeacherLoadError, match="would run code"):
        _load(tmp_path / "evil.pt", "state_dict")
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["state_dict", "safetensors"])
def test_weights_need_an_arch(cnn_digits: Digits, fmt: str) -> None:
    with pytest.raises(TeacherLoadError, match=r"give its architecture in teacher\.arch"):
        _load(cnn_digits.teachers[fmt], fmt, arch=None)


def test_weights_of_another_arch_are_refused(cnn_digits: Digits) -> None:
    with pytest.raises(TeacherLoadError, match=r"missing .*unexpected"):
        _load(cnn_digits.teachers["safetensors"], "safetensors", arch=TEACHER_ARCHS["mlp"])


def test_weights_of_another_width_are_refused(cnn_digits: Digits) -> None:
    arch = TEACHER_ARCHS["cnn"] | {"hidden_sizes": [32]}

    with pytest.raises(TeacherLoadError, match=r"body.0.weight is \[64, 128\] in the file"):
        _load(cnn_digits.teachers["state_dict"], "state_dict", arch=arch)


def test_data_that_does_not_fit_the_first_layer_is_a_shape_mismatch(mlp_digits: Digits) -> None:
    with pytest.raises(ShapeMismatch, match=r"data has shape \(N, 32\)"):
        _load(mlp_digits.teachers["state_dict"], "state_dict", TEACHER_ARCHS["mlp"], (32,))


def test_a_dict_that_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "weights": [torch.zeros(2)]}, tmp_path / "ckpt.pt")
    save_file({"layer.weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))

    with pytest.raises(TeacherLoadError, match="flat dict of tensors"):
        _load(tmp_path / "ckpt.pt", "state_dict")
    with pytest.raises(TeacherLoadError, match=r"no 'out\.weight'"):
        _load(tmp_path / "w.safetensors", "safetensors")


def test_the_wrong_format_fails_to_load(cnn_digits: Digits) -> None:
    with pytest.raises(TeacherLoadError, match="as TorchScript"):
        _load(cnn_digits.teachers["state_dict"], "torchscript")


def test_a_fixed_batch_export_is_explained(cnn_digits: Digits, tmp_path: Path) -> None:
    x = torch.from_numpy(cnn_digits.trained.x_val[:8])
    program = torch.export.export(cnn_digits.trained.model, (x,))  # batch size fixed at 8
    torch.export.save(program, str(tmp_path / "fixed.pt2"))
    teacher = _load(tmp_path / "fixed.pt2", "torch_export")

    with pytest.raises(ShapeMismatch, match="dynamic batch dimension"):
        teacher.check(torch.from_numpy(cnn_digits.trained.x_val[:16]))


class _TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), x.flatten(1)


def test_a_teacher_must_return_a_logits_tensor(tmp_path: Path) -> None:
    save_teacher(_TwoOutputs(), tmp_path / "t.pt", "torchscript")
    teacher = _load(tmp_path / "t.pt", "torchscript")

    with pytest.raises(ShapeMismatch, match=r"returned a tuple; it must return a \(4, K\) tensor"):
        teacher(torch.zeros(4, *CNN_SHAPE))
