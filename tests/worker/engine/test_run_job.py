"""run_job end to end on digits: formats, quality, metrics, artifacts, progress and failures."""

import json
import os
from pathlib import Path

import pytest
import torch

from jobspec import JobSpec
from tests.helpers.teachers import (
    TEACHER_ARCHS,
    TEACHER_FORMATS,
    Digits,
    accuracy,
    job_spec,
    save_csv,
    save_npz,
)
from tests.worker.engine.conftest import Recorder
from worker.engine import (
    DeviceUnavailable,
    EngineResult,
    LabelsRequired,
    OutOfMemory,
    ShapeMismatch,
    TeacherLoadError,
    TrainingDiverged,
    load_student,
    run_job,
)

# TorchScript is deprecated in torch 2.x; the contract still promises it (student.pt).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

ARTIFACTS = {
    "student.safetensors",
    "student.json",
    "student.pt",
    "metrics.json",
    "model_card.md",
    "curves.svg",
}
METRICS = {
    "teacher_accuracy",
    "student_accuracy",
    "agreement",
    "kl_divergence",
    "teacher_params",
    "student_params",
    "compression_ratio",
    "student_size_bytes",
    "teacher_latency_ms",
    "student_latency_ms",
    "speedup",
    "train_seconds",
    "device",
    "world_size",
    "teacher_cache",
}
STUDENT = {"arch": "mlp", "hidden_sizes": [64], "activation": "relu", "dropout": 0.0}


@pytest.fixture(scope="module")
def distilled(cnn_digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    """A CNN teacher distilled into an MLP with a third of its parameters, to completion."""
    spec = job_spec(student=STUDENT, epochs=15, learning_rate=0.005)
    return run_job(cnn_digits.job(tmp_path_factory.mktemp("distilled"), spec))


def test_student_keeps_95_percent_of_the_teachers_accuracy(
    distilled: EngineResult, cnn_digits: Digits
) -> None:
    metrics = distilled.metrics
    assert metrics["student_accuracy"] >= 0.95 * metrics["teacher_accuracy"]
    assert metrics["agreement"] >= 0.95
    assert metrics["compression_ratio"] > 2.5
    # and on data no part of the job has seen:
    trained = cnn_digits.trained
    student = load_student(distilled.artifacts[0].parent)
    assert accuracy(student, trained.x_test, trained.y_test) >= 0.95 * trained.test_accuracy


def test_metrics_and_artifacts_follow_the_contract(
    distilled: EngineResult, cnn_digits: Digits
) -> None:
    out = distilled.artifacts[0].parent
    metrics = distilled.metrics

    assert {p.name for p in distilled.artifacts} == ARTIFACTS
    assert {p.name for p in out.iterdir()} == ARTIFACTS  # no temporary files left behind
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert set(metrics) == METRICS
    trained = cnn_digits.trained
    assert metrics["teacher_accuracy"] == pytest.approx(
        accuracy(trained.model, trained.x_val, trained.y_val)
    )
    assert metrics["teacher_params"] == sum(p.numel() for p in trained.model.parameters())
    assert metrics["compression_ratio"] == metrics["teacher_params"] / metrics["student_params"]
    assert metrics["student_size_bytes"] == (out / "student.safetensors").stat().st_size
    assert metrics["teacher_latency_ms"] > 0 and metrics["student_latency_ms"] > 0
    assert metrics["speedup"] == metrics["teacher_latency_ms"] / metrics["student_latency_ms"]
    assert metrics["kl_divergence"] >= 0 and metrics["device"] == "cpu"


def test_student_pt_alone_reproduces_the_student_accuracy(
    distilled: EngineResult, cnn_digits: Digits
) -> None:
    out = distilled.artifacts[0].parent
    trained = cnn_digits.trained

    deployed = torch.jit.load(str(out / "student.pt"))

    assert accuracy(deployed, trained.x_val, trained.y_val) == pytest.approx(
        distilled.metrics["student_accuracy"]
    )
    x = torch.from_numpy(trained.x_val)
    with torch.no_grad():
        torch.testing.assert_close(load_student(out)(x), deployed(x))
    assert json.loads((out / "student.json").read_text()) == {
        "format_version": 1,
        "arch": STUDENT,
        "input_shape": [1, 8, 8],
        "num_outputs": 10,
        "class_names": None,
    }


@pytest.mark.parametrize("fmt", TEACHER_FORMATS)
def test_every_teacher_format_distils(cnn_digits: Digits, tmp_path: Path, fmt: str) -> None:
    spec = job_spec(teacher_arch=TEACHER_ARCHS["cnn"], epochs=1)
    job = cnn_digits.job(tmp_path, spec, teacher_path=cnn_digits.teachers[fmt], teacher_format=fmt)

    result = run_job(job)

    assert {p.name for p in result.artifacts} == ARTIFACTS
    assert result.metrics["teacher_accuracy"] > 0.9


def test_progress_and_metric_points(cnn_digits: Digits, tmp_path: Path) -> None:
    recorder = Recorder()
    job = cnn_digits.job(tmp_path, job_spec(epochs=2), progress_interval=0.0)

    run_job(job, recorder)

    steps_per_epoch = -(-len(cnn_digits.trained.x_train) // 64)
    total = 2 * steps_per_epoch
    assert [p.step for p in recorder.progress] == list(range(1, total + 1))
    assert [p["step"] for p in recorder.points] == list(range(1, total + 1))
    assert {p.phase for p in recorder.progress} == {"student"}
    last = recorder.progress[-1]
    assert (last.epoch, last.epochs, last.total_steps, last.fraction) == (2, 2, total, 1.0)
    epoch_ends = [p for p in recorder.points if "val_accuracy" in p]
    assert [p["step"] for p in epoch_ends] == [steps_per_epoch, total]
    assert set(epoch_ends[0]) == {
        "step",
        "epoch",
        "train_loss",
        "kd_loss",
        "ce_loss",
        "learning_rate",
        "val_accuracy",
        "val_loss",
        "val_agreement",
    }
    assert all(p.eta_seconds is None or p.eta_seconds >= 0 for p in recorder.progress)


def test_unlabelled_data_learns_from_the_teacher_alone(cnn_digits: Digits, tmp_path: Path) -> None:
    recorder = Recorder()
    job = cnn_digits.job(
        tmp_path,
        job_spec(alpha=1.0, epochs=2),
        train_path=cnn_digits.train_unlabelled,
        validation_path=None,
        validation_format=None,
    )

    metrics = run_job(job, recorder).metrics

    assert metrics["teacher_accuracy"] is None and metrics["student_accuracy"] is None
    assert 0 < metrics["agreement"] <= 1
    assert recorder.points[-1]["ce_loss"] is None and recorder.points[-1]["val_accuracy"] is None


def test_unlabelled_training_data_with_a_labelled_validation_file(
    cnn_digits: Digits, tmp_path: Path
) -> None:
    job = cnn_digits.job(
        tmp_path, job_spec(alpha=1.0, epochs=1), train_path=cnn_digits.train_unlabelled
    )

    assert run_job(job).metrics["student_accuracy"] > 0


@pytest.mark.parametrize("spec", [job_spec(alpha=0.5), job_spec(alpha=1.0, baseline=True)])
def test_labels_are_required_for_a_label_loss(
    cnn_digits: Digits, tmp_path: Path, spec: JobSpec
) -> None:
    recorder = Recorder()
    job = cnn_digits.job(tmp_path, spec, train_path=cnn_digits.train_unlabelled)

    with pytest.raises(LabelsRequired, match="no labels"):
        run_job(job, recorder)
    assert recorder.progress == []


def test_data_of_the_wrong_shape_fails_before_training(
    cnn_digits: Digits, mlp_digits: Digits, tmp_path: Path
) -> None:
    recorder = Recorder()
    job = cnn_digits.job(  # flat (N, 64) digits for a teacher that takes (N, 1, 8, 8) images
        tmp_path, job_spec(), train_path=mlp_digits.train, validation_path=mlp_digits.validation
    )

    with pytest.raises(ShapeMismatch, match=r"batch of shape \(64, 64\)") as info:
        run_job(job, recorder)
    assert info.value.code == "shape_mismatch"
    assert recorder.progress == [] and not job.checkpoint_path.exists()


def test_labels_beyond_the_teachers_classes(cnn_digits: Digits, tmp_path: Path) -> None:
    trained = cnn_digits.trained
    train = save_npz(tmp_path / "train.npz", trained.x_train, trained.y_train + 3)

    with pytest.raises(ShapeMismatch, match="labels go up to 12, but the teacher has only 10"):
        run_job(cnn_digits.job(tmp_path, job_spec(), train_path=train))


def test_validation_data_of_another_shape(
    cnn_digits: Digits, mlp_digits: Digits, tmp_path: Path
) -> None:
    job = cnn_digits.job(tmp_path, job_spec(), validation_path=mlp_digits.validation)

    with pytest.raises(ShapeMismatch, match=r"validation data has shape \(N, 64\)"):
        run_job(job)


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        ({"learning_rate": 1e30}, "training loss became NaN"),  # the student blows up
        ({"x_scale": 1e38}, "teacher returned NaN or infinite"),  # the teacher overflows
    ],
)
def test_divergence_is_reported(
    cnn_digits: Digits, tmp_path: Path, hyperparameters: dict, expected: str
) -> None:
    scale = hyperparameters.pop("x_scale", 1.0)
    trained = cnn_digits.trained
    train = save_npz(tmp_path / "train.npz", trained.x_train * scale, trained.y_train)
    spec = job_spec(epochs=2)
    # Past the spec's range (model_copy does not validate): the engine's check must still hold.
    spec.hyperparameters = spec.hyperparameters.model_copy(update=hyperparameters)
    job = cnn_digits.job(tmp_path, spec, train_path=train)

    with pytest.raises(TrainingDiverged, match=expected):
        run_job(job)
    assert not job.output_dir.exists()


def test_csv_with_class_names(mlp_digits: Digits, tmp_path: Path) -> None:
    names = [f"digit_{i}" for i in range(10)]  # sorted order == the teacher's class order
    trained = mlp_digits.trained
    job = mlp_digits.job(
        tmp_path,
        job_spec(epochs=2),
        train_path=save_csv(tmp_path / "train.csv", trained.x_train, trained.y_train, names),
        train_format="csv",
        validation_path=save_csv(tmp_path / "val.csv", trained.x_val, trained.y_val, names),
        validation_format="csv",
        teacher_path=mlp_digits.teachers["torchscript"],
    )

    result = run_job(job)

    info = json.loads((job.output_dir / "student.json").read_text())
    assert info["class_names"] == names and info["input_shape"] == [64]
    assert result.metrics["teacher_accuracy"] == pytest.approx(
        accuracy(trained.model, trained.x_val, trained.y_val)
    )


def test_baseline_trains_on_labels_alone(cnn_digits: Digits, tmp_path: Path) -> None:
    recorder = Recorder()
    job = cnn_digits.job(tmp_path, job_spec(epochs=2, baseline=True), progress_interval=0.0)

    metrics = run_job(job, recorder).metrics

    assert 0 < metrics["baseline_accuracy"] <= 1 and metrics["baseline_train_seconds"] > 0
    steps_per_epoch = -(-len(cnn_digits.trained.x_train) // 64)
    total = 2 * 2 * steps_per_epoch  # two phases of two epochs
    progress = recorder.progress
    # Epochs count within each phase and are always the spec's; the phase switches once.
    assert all(p.epochs == 2 and p.total_steps == total for p in progress)
    assert [p.phase for p in progress] == ["student"] * (total // 2) + ["baseline"] * (total // 2)
    for phase in ("student", "baseline"):
        epochs = [p.epoch for p in progress if p.phase == phase]
        assert epochs == sorted(epochs) and (epochs[0], epochs[-1]) == (1, 2)
    # Steps and the fraction span the whole job.
    assert [p.step for p in progress] == list(range(1, total + 1))
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 1.0 not in fractions[:-1]
    assert (progress[-1].phase, progress[-1].epoch) == ("baseline", 2)
    # Metric points are the student's only.
    assert [p["step"] for p in recorder.points] == list(range(1, total // 2 + 1))
    infos = recorder.messages("info")
    assert "Student epoch 2/2 done." in infos and "Baseline epoch 2/2 done." in infos
    # Each epoch's end says which phase and epoch it closes, beside the validation measures.
    ends = [data for _, message, data in recorder.logs if message.endswith(" done.")]
    assert [(d["phase"], d["epoch"], d["epochs"]) for d in ends] == [
        ("student", 1, 2),
        ("student", 2, 2),
        ("baseline", 1, 2),
        ("baseline", 2, 2),
    ]
    assert all("val_accuracy" in d for d in ends)


def test_a_cnn_student(cnn_digits: Digits, tmp_path: Path) -> None:
    student = {"arch": "cnn", "channels": [8], "kernel_size": 3, "hidden_sizes": [32]}

    spec = job_spec(student=student, epochs=3, learning_rate=0.005)

    result = run_job(cnn_digits.job(tmp_path, spec))

    assert result.metrics["student_accuracy"] > 0.8


def test_a_cnn_student_needs_images_or_signals(mlp_digits: Digits, tmp_path: Path) -> None:
    student = {"arch": "cnn", "channels": [8], "kernel_size": 3, "hidden_sizes": [32]}
    trained = mlp_digits.trained  # the mlp teacher flattens, so only the student objects
    train = save_npz(
        tmp_path / "train.npz", trained.x_train.reshape(-1, 1, 1, 8, 8), trained.y_train
    )
    val = save_npz(tmp_path / "val.npz", trained.x_val.reshape(-1, 1, 1, 8, 8), trained.y_val)
    recorder = Recorder()
    job = mlp_digits.job(tmp_path, job_spec(student=student), train_path=train, validation_path=val)

    with pytest.raises(ShapeMismatch, match=r"images of shape \(N, C, H, W\) or signals") as info:
        run_job(job, recorder)
    assert "the data has shape (N, 1, 1, 8, 8)" in str(info.value)
    assert recorder.progress == [] and not job.checkpoint_path.exists()


class _Marker:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_a_teacher_file_that_would_run_code(cnn_digits: Digits, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"out.weight": torch.zeros(10, 64), "x": _Marker(marker)}, tmp_path / "evil.pt")
    spec = job_spec(teacher_arch=TEACHER_ARCHS["cnn"])
    job = cnn_digits.job(
        tmp_path, spec, teacher_path=tmp_path / "evil.pt", teacher_format="state_dict"
    )

    with pytest.raises(TeacherLoadError, match="would run code") as info:
        run_job(job)
    assert info.value.code == "teacher_load_failed"
    assert not marker.exists()


def test_a_truncated_teacher(cnn_digits: Digits, tmp_path: Path) -> None:
    content = cnn_digits.teachers["state_dict"].read_bytes()
    (tmp_path / "teacher.pt").write_bytes(content[:-100])
    spec = job_spec(teacher_arch=TEACHER_ARCHS["cnn"])
    job = cnn_digits.job(
        tmp_path, spec, teacher_path=tmp_path / "teacher.pt", teacher_format="state_dict"
    )

    with pytest.raises(TeacherLoadError, match="truncated"):
        run_job(job)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu(cnn_digits: Digits, tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable, match="'cuda' is not available"):
        run_job(cnn_digits.job(tmp_path, job_spec(), device="cuda"))


def test_running_out_of_gpu_memory(
    cnn_digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("worker.engine.tasks.distillation_loss", exhausted)

    with pytest.raises(OutOfMemory, match="lower batch_size") as info:
        run_job(cnn_digits.job(tmp_path, job_spec()))
    assert info.value.code == "out_of_memory"


def test_a_students_weights_can_teach(
    distilled: EngineResult, cnn_digits: Digits, tmp_path: Path
) -> None:
    weights = distilled.artifacts[0].parent / "student.safetensors"
    spec = job_spec(teacher_arch=STUDENT, epochs=1)
    job = cnn_digits.job(tmp_path, spec, teacher_path=weights, teacher_format="safetensors")

    metrics = run_job(job).metrics

    assert metrics["teacher_accuracy"] == distilled.metrics["student_accuracy"]
