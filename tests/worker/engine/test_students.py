"""Students beyond mlp and cnn, and the losses that match layers, through whole engine jobs on
the digits teachers: a transformer student, from_teacher students that start from the teacher's
layers, and hidden-state and attention matching (with resume)."""

import json
from pathlib import Path

import pytest
import torch

from jobspec import FromTeacherArch, JobSpec, Losses
from tests.helpers.teachers import Digits, job_spec, save_teacher
from tests.worker.engine.conftest import Recorder
from worker.engine import JobCancelled, ShapeMismatch, UnsupportedInput, run_job
from worker.engine.artifacts import load_student
from worker.engine.students import plan_student
from worker.engine.teacher import load_teacher

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

TRANSFORMER = {"arch": "transformer", "num_layers": 2, "hidden_size": 16, "num_heads": 2}


def _with_losses(spec: JobSpec, **losses: object) -> JobSpec:
    return spec.model_copy(update={"losses": Losses.model_validate(losses)})


def _state_dict_job(digits: Digits, tmp_path: Path, spec: JobSpec, **overrides: object):
    return digits.job(
        tmp_path,
        spec,
        teacher_path=digits.teachers["state_dict"],
        teacher_format="state_dict",
        **overrides,
    )


def test_a_transformer_student_learns_digits_and_scripts(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(student=TRANSFORMER, epochs=3, learning_rate=0.01)

    result = run_job(mlp_digits.job(tmp_path, spec))

    assert result.metrics["student_accuracy"] > 0.5  # 10 classes: chance is 0.1
    out = tmp_path / "out"
    x = torch.from_numpy(mlp_digits.trained.x_val[:5])
    deployed = torch.jit.load(str(out / "student.pt"))
    torch.testing.assert_close(deployed(x), load_student(out)(x))


def _plan(digits: Digits, arch: dict, layers: list[int]):
    shape = tuple(digits.trained.x_train.shape[1:])
    teacher = load_teacher(
        digits.teachers["state_dict"], "state_dict", arch, shape, torch.device("cpu")
    )
    return teacher, plan_student(
        FromTeacherArch(arch="from_teacher", layers=layers), teacher, shape, 10
    )


def test_from_teacher_mlp_keeps_the_chosen_layers_weights(
    mlp_digits: Digits, teacher_archs: dict
) -> None:
    teacher, plan = _plan(mlp_digits, teacher_archs["mlp"], [0])

    student = plan.build()

    assert plan.arch["hidden_sizes"] == [teacher_archs["mlp"]["hidden_sizes"][0]]
    torch.testing.assert_close(student.body[0].weight, teacher.module.body[0].weight)
    # The head took the second hidden layer's width, 128, and now gets 256: started afresh.
    assert plan.note is not None and "out.weight" in plan.note


def test_from_teacher_refuses_layers_whose_widths_do_not_chain(
    mlp_digits: Digits, teacher_archs: dict
) -> None:
    with pytest.raises(ShapeMismatch) as info:
        _plan(mlp_digits, teacher_archs["mlp"], [1])

    assert "student layer 0 should start from teacher layer 1" in info.value.message
    assert "[128, 256]" in info.value.message


def test_from_teacher_refuses_layers_the_teacher_lacks(
    mlp_digits: Digits, teacher_archs: dict
) -> None:
    with pytest.raises(UnsupportedInput, match=r"names teacher layer 2, but the teacher") as e:
        _plan(mlp_digits, teacher_archs["mlp"], [0, 2])
    assert e.value.code == "unsupported_arch"


def test_from_teacher_needs_a_teacher_with_visible_layers(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(student={"arch": "from_teacher", "layers": [0]}, epochs=1)

    with pytest.raises(UnsupportedInput, match="this one is torchscript"):
        run_job(mlp_digits.job(tmp_path, spec))


def test_a_from_teacher_transformer_starts_as_the_teachers_layers(tmp_path: Path) -> None:
    """Three of a six-layer transformer teacher's layers: each student layer equals its teacher
    layer, and so do the embedding, positions and head."""
    torch.manual_seed(0)
    arch = TRANSFORMER | {"num_layers": 6}
    teacher_model = build_transformer(arch)
    path = save_teacher(teacher_model, tmp_path / "teacher.safetensors", "safetensors")
    teacher = load_teacher(path, "safetensors", arch, (12,), torch.device("cpu"))

    student = plan_student(
        FromTeacherArch(arch="from_teacher", layers=[1, 3, 5]), teacher, (12,), 3
    ).build()

    for i, j in enumerate([1, 3, 5]):
        for a, b in zip(
            student.layers[i].parameters(), teacher_model.layers[j].parameters(), strict=True
        ):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(student.position, teacher_model.position)
    torch.testing.assert_close(student.out.weight, teacher_model.out.weight)


def build_transformer(arch: dict) -> torch.nn.Module:
    from worker.engine.models import build_model

    return build_model(arch, (12,), 3).eval()


def test_a_from_teacher_job_records_the_resolved_arch(
    mlp_digits: Digits, teacher_archs: dict, tmp_path: Path
) -> None:
    spec = job_spec(
        student={"arch": "from_teacher", "layers": [0]},
        teacher_arch=teacher_archs["mlp"],
        epochs=2,
    )

    result = run_job(_state_dict_job(mlp_digits, tmp_path, spec))

    info = json.loads((tmp_path / "out" / "student.json").read_text())
    assert info["arch"]["arch"] == "mlp" and info["arch"]["hidden_sizes"] == [256]
    assert result.metrics["student_accuracy"] > 0.8
    x = torch.from_numpy(mlp_digits.trained.x_val[:5])
    torch.testing.assert_close(
        torch.jit.load(str(tmp_path / "out" / "student.pt"))(x), load_student(tmp_path / "out")(x)
    )


HIDDEN = {"weight": 0.5, "metric": "cosine", "layers": None}


def test_hidden_state_matching_trains_and_reports_the_pairing(
    mlp_digits: Digits, teacher_archs: dict, tmp_path: Path
) -> None:
    spec = _with_losses(
        job_spec(
            teacher_arch=teacher_archs["mlp"],
            epochs=3,
            learning_rate=0.01,
            student={"arch": "mlp", "hidden_sizes": [32, 16]},
        ),
        hidden=HIDDEN,
    )
    recorder = Recorder()

    result = run_job(_state_dict_job(mlp_digits, tmp_path, spec), recorder)

    assert result.metrics["layer_pairs"] == {"hidden": [[0, 0], [1, 1]]}
    assert result.metrics["teacher_cache"] == "off"  # the teacher's layers are needed live
    assert result.metrics["student_accuracy"] > 0.6  # chance is 0.1
    pairing = next(m for m in recorder.messages("info") if m.startswith("Layer matching"))
    assert "student layer 0 (B, 32) -> teacher layer 0 (B, 256) through a learned projection" in (
        pairing
    )
    hidden = [p["hidden_loss"] for p in recorder.points]
    assert all(h is not None and h > 0 for h in hidden) and hidden[-1] < hidden[0]
    # The projections are not part of the student.
    assert not any("projection" in k for k in load_student(tmp_path / "out").state_dict())


def test_layer_losses_need_a_teacher_that_shows_its_layers(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = _with_losses(job_spec(epochs=1), hidden=HIDDEN)

    with pytest.raises(UnsupportedInput, match="a torchscript teacher does not show them") as info:
        run_job(mlp_digits.job(tmp_path, spec))
    assert info.value.code == "unsupported_loss"


def test_a_bad_pairing_fails_before_training(
    mlp_digits: Digits, teacher_archs: dict, tmp_path: Path
) -> None:
    spec = _with_losses(
        job_spec(teacher_arch=teacher_archs["mlp"], epochs=1),
        hidden=HIDDEN | {"layers": [[0, 3]]},
    )
    recorder = Recorder()

    with pytest.raises(ShapeMismatch, match="teacher layer 3, but the teacher has 2 layers"):
        run_job(_state_dict_job(mlp_digits, tmp_path, spec), recorder)
    assert recorder.progress == []


def test_logit_mse_is_a_different_loss(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(epochs=3, learning_rate=0.01)
    kl = run_job(mlp_digits.job(tmp_path / "kl", spec))
    mse = run_job(mlp_digits.job(tmp_path / "mse", _with_losses(spec, logits="mse")))

    assert mse.metrics["student_accuracy"] > 0.5
    assert (tmp_path / "kl/out/student.safetensors").read_bytes() != (
        tmp_path / "mse/out/student.safetensors"
    ).read_bytes()
    assert kl.metrics["teacher_cache"] != "off"


def test_attention_matching_resumes_to_the_same_student(tmp_path: Path, mlp_digits: Digits) -> None:
    """A transformer teacher (safetensors) into a smaller transformer with hidden-state and
    attention matching, stopped after its first epoch and resumed: the projections' state is in
    the checkpoint, so the result is the uninterrupted run's, bit for bit."""
    torch.manual_seed(0)
    arch = TRANSFORMER | {"num_layers": 4, "hidden_size": 32}
    teacher = save_teacher(build_transformer(arch), tmp_path / "t.safetensors", "safetensors")
    spec = _with_losses(
        job_spec(student=TRANSFORMER, teacher_arch=arch, epochs=2, batch_size=128),
        hidden={"weight": 1.0, "metric": "mse", "layers": None},
        attention={"weight": 1.0, "layers": [[0, 1], [1, 3]]},
    )
    x = torch.randn(300, 12)
    y = torch.randint(0, 3, (300,))
    data = tmp_path / "d.npz"
    import numpy as np

    np.savez(data, x=x.numpy(), y=y.numpy())

    def job(folder: str):
        return mlp_digits.job(
            tmp_path / folder,
            spec,
            teacher_path=teacher,
            teacher_format="safetensors",
            train_path=data,
            validation_path=data,
        )

    whole = run_job(job("whole"))
    with pytest.raises(JobCancelled):
        run_job(job("resumed"), Recorder(stop_after=("student", 1)))
    resumed = run_job(job("resumed"))

    assert whole.metrics["layer_pairs"] == {
        "hidden": [[0, 1], [1, 3]],
        "attention": [[0, 1], [1, 3]],
    }
    assert (tmp_path / "whole/out/student.safetensors").read_bytes() == (
        tmp_path / "resumed/out/student.safetensors"
    ).read_bytes()
    assert resumed.metrics["kl_divergence"] == whole.metrics["kl_divergence"]
