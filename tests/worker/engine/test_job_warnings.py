"""The warnings a job gives at setup: a student that is not smaller than its teacher, and
validation rows split off the training file (which the teacher may have been trained on). Each
is a ``warning`` log event with its ``data.code``, before the first epoch; the card says the
same."""

from pathlib import Path

import pytest

from jobspec import warnings as job_warnings
from tests.helpers.teachers import TEACHER_ARCHS, Digits, job_spec
from tests.worker.engine.conftest import Recorder
from worker.engine import JobCancelled, run_job

SMALL = {"arch": "mlp", "hidden_sizes": [16], "activation": "relu", "dropout": 0.0}
# The digits MLP teacher is 64 -> 256 -> 128 -> 10 (50,826 parameters); this is 3.3x that.
LARGE = {"arch": "mlp", "hidden_sizes": [512, 256], "activation": "relu", "dropout": 0.0}
# The teacher's own hidden layers, all kept (its head afresh): exactly its size.
ALL_LAYERS = {"arch": "from_teacher", "layers": [0, 1]}


def _warnings(recorder: Recorder) -> dict[str, str]:
    """code -> message of each warning logged before the first progress report."""
    return {
        data["code"]: message
        for level, message, data in recorder.logs
        if level == "warning" and data and "code" in data
    }


@pytest.mark.parametrize(
    ("teacher", "student", "words"),
    [
        (1_000, 999, None),
        (1_000, 1_000, "1,000 parameters, as many as the teacher"),
        (1_000, 1_330, "1,330 parameters, 1.3x the teacher's 1,000"),
    ],
)
def test_a_student_is_not_smaller_from_as_many_parameters_as_its_teacher(
    teacher: int, student: int, words: str | None
) -> None:
    warning = job_warnings.student_not_smaller(teacher, student)

    if words is None:
        assert warning is None
    else:
        assert warning is not None and warning.code == "student_not_smaller"
        assert words in warning.message and "not be smaller" in warning.message


def test_only_a_validation_split_may_overlap_the_teachers_training() -> None:
    assert job_warnings.validation_may_overlap_teacher_training(None) is None
    warning = job_warnings.validation_may_overlap_teacher_training(0.2)
    assert warning is not None and warning.code == "validation_may_overlap_teacher_training"
    assert "20% split of the training file" in warning.message


def test_at_setup_gives_each_warning_that_applies() -> None:
    codes = [w.code for w in job_warnings.at_setup(100, 200, 0.1)]
    assert codes == ["student_not_smaller", "validation_may_overlap_teacher_training"]
    assert job_warnings.at_setup(200, 100, None) == []


@pytest.mark.parametrize("student", [LARGE, ALL_LAYERS], ids=["wider", "all_layers"])
def test_a_job_whose_student_is_not_smaller_warns_and_its_card_says_so(
    mlp_digits: Digits, tmp_path: Path, student: dict
) -> None:
    recorder = Recorder()
    # from_teacher copies the teacher's layers: a teacher whose layers it can see
    spec = job_spec(student=student, teacher_arch=TEACHER_ARCHS["mlp"], epochs=1)
    teacher = {"teacher_path": mlp_digits.teachers["state_dict"], "teacher_format": "state_dict"}

    result = run_job(mlp_digits.job(tmp_path, spec, **teacher), recorder)

    warnings = _warnings(recorder)
    assert set(warnings) == {"student_not_smaller"}
    assert f"{result.metrics['student_params']:,} parameters" in warnings["student_not_smaller"]
    card = (tmp_path / "out/model_card.md").read_text()
    summary = card.split("\n\n")[1]
    assert "fewer parameters" not in card
    assert ("as many parameters as the teacher" in summary) is (student is ALL_LAYERS)
    assert ("3.3x more parameters" in summary) is (student is LARGE)
    assert "The student is not smaller than its teacher" in card


def test_a_job_validated_on_a_split_of_its_training_file_warns_and_its_card_says_so(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    recorder = Recorder()
    job = mlp_digits.job(tmp_path, job_spec(student=SMALL, epochs=1), validation_path=None)

    run_job(job, recorder)

    assert set(_warnings(recorder)) == {"validation_may_overlap_teacher_training"}
    card = (tmp_path / "out/model_card.md").read_text()
    assert "If the teacher was trained on that file, it has seen them" in card


def test_a_small_student_with_a_validation_file_gives_no_warning(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    recorder = Recorder()

    run_job(mlp_digits.job(tmp_path, job_spec(student=SMALL, epochs=1)), recorder)

    assert _warnings(recorder) == {}
    card = (tmp_path / "out/model_card.md").read_text()
    assert "not smaller" not in card and "has seen them" not in card


def test_a_resumed_job_does_not_warn_again(mlp_digits: Digits, tmp_path: Path) -> None:
    """The warnings are the job's, given once: a job resumed from its checkpoint (after a cancel
    or a lost worker) has given them already."""
    job = mlp_digits.job(
        tmp_path, job_spec(student=SMALL, epochs=2), validation_path=None, progress_interval=0.0
    )
    first, resumed = Recorder(stop_at_step=3), Recorder()

    with pytest.raises(JobCancelled):
        run_job(job, first)
    run_job(job, resumed)

    assert set(_warnings(first)) == {"validation_may_overlap_teacher_training"}
    assert _warnings(resumed) == {}
    card = (tmp_path / "out/model_card.md").read_text()
    assert "If the teacher was trained on that file, it has seen them" in card
