"""The rules on what a spec needs of its data, as plain facts in and ``SpecConflict`` out; the
API (tests/app/jobs/test_label_rules.py) and the engine (tests/worker/engine) answer them."""

from typing import Any

import pytest

from jobspec import JobSpec
from jobspec.requirements import SpecConflict, check_early_stopping_metric, check_labels


def job(task: str = "classification", baseline: bool = False, **more: Any) -> JobSpec:
    sweep = more.pop("sweep", None)
    return JobSpec.model_validate(
        {
            "task": task,
            "teacher": {"file_id": "file_t"},
            "data": {"train_file_id": "file_d"},
            "hyperparameters": more,
            "baseline": baseline,
            "sweep": sweep,
        }
    )


ON_LOSS = {"metric": "val_loss"}
ON_ACCURACY = {"metric": "val_accuracy"}


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        (job(), "hyperparameters.alpha"),  # alpha 0.5 by default
        (job(alpha=1.0, alpha_schedule="linear", alpha_end=0.5), "hyperparameters.alpha"),
        (job(alpha=1.0, sweep={"alpha": [1.0, 0.9]}), "sweep.alpha"),
        (job(alpha=1.0, baseline=True), "baseline"),
    ],
)
def test_unlabelled_training_data_refuses_every_label_term(spec: JobSpec, param: str) -> None:
    with pytest.raises(SpecConflict) as refused:
        check_labels(spec, train_has_labels=False, validation_has_labels=True)
    assert (refused.value.param, refused.value.code) == (param, "labels_required")
    assert "no labels" in refused.value.message

    check_labels(spec, train_has_labels=True, validation_has_labels=True)


@pytest.mark.parametrize(
    "spec",
    [
        job(alpha=1.0),
        job(sweep={"alpha": [1.0]}),  # the swept values replace alpha's default 0.5
        job(alpha=1.0, early_stopping=ON_LOSS),  # val_loss is the teacher's term alone
    ],
)
def test_the_teacher_alone_needs_no_labels(spec: JobSpec) -> None:
    check_labels(spec, train_has_labels=False, validation_has_labels=False)


@pytest.mark.parametrize(
    "spec",
    [
        job(alpha=1.0, early_stopping=ON_ACCURACY),
        job(alpha=0.5, early_stopping=ON_LOSS),  # val_loss has a label term
        job(alpha=1.0, early_stopping=ON_LOSS, baseline=True),  # and so has the baseline's
        job(alpha=1.0, sweep={"alpha": [1.0, 0.5]}, early_stopping=ON_LOSS),
    ],
)
def test_early_stopping_on_a_label_metric_needs_labelled_validation(spec: JobSpec) -> None:
    with pytest.raises(SpecConflict) as refused:
        check_labels(spec, train_has_labels=True, validation_has_labels=False)
    assert refused.value.param == "hyperparameters.early_stopping.metric"
    assert refused.value.code == "labels_required"

    check_labels(spec, train_has_labels=True, validation_has_labels=True)


def test_early_stopping_watches_a_metric_of_the_task() -> None:
    with pytest.raises(SpecConflict, match="A regression job has no val_accuracy") as refused:
        check_early_stopping_metric(job("regression", early_stopping=ON_ACCURACY))
    assert (refused.value.param, refused.value.code) == (
        "hyperparameters.early_stopping.metric",
        "invalid_request",
    )

    check_early_stopping_metric(job("regression", early_stopping=ON_LOSS))
    check_early_stopping_metric(job("classification", early_stopping=ON_ACCURACY))
