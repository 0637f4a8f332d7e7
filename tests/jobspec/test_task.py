"""The task's own defaults and refusals: ``with_task`` applies them to a spec as written (the API
infers causal_lm from the teacher), and a refusal names the field at fault."""

from typing import Any

import pytest
from pydantic import ValidationError

from jobspec import JobSpec
from jobspec import errors as validation_errors
from jobspec.requirements import SpecConflict, check_early_stopping_metric, check_student_layers

LM_STUDENT = {"arch": "from_teacher", "layers": [0, 2]}


def written(**more: Any) -> dict[str, Any]:
    return {"teacher": {"file_id": "file_t"}, "data": {"train_file_id": "file_d"}, **more}


def refusal(spec: JobSpec, task: str) -> tuple[str, str | None]:
    """(message, param) as the API tells the refusal."""
    with pytest.raises(ValidationError) as caught:
        spec.with_task(task)
    body = spec.model_dump(mode="json", exclude_unset=True) | {"task": task}
    error = validation_errors.first_error(validation_errors.body_errors(caught.value))
    return validation_errors.describe(error, body, JobSpec)


def test_causal_lm_defaults_apply_to_what_the_spec_left_out() -> None:
    spec = JobSpec.model_validate(written(student=LM_STUDENT)).with_task("causal_lm")
    assert spec.task == "causal_lm"
    assert (spec.losses.logits, spec.losses.beta) == ("forward_kl", None)
    assert spec.hyperparameters.temperature == 1.0
    assert spec.hyperparameters.teacher_top_k == 64
    assert spec.hyperparameters.teacher_signal == "sampled"
    assert spec.hyperparameters.teacher_draws == 128
    assert spec.student.model_dump() == {"arch": "from_teacher", "layers": [0, 2]}


def test_what_the_spec_wrote_wins_over_the_defaults() -> None:
    spec = JobSpec.model_validate(
        written(
            student={"file_id": "file_s"},
            losses={"logits": "jsd"},
            hyperparameters={
                "temperature": 2.0,
                "teacher_top_k": 0,
                "teacher_signal": "top_k",
                "early_stopping": {},
            },
        )
    ).with_task("causal_lm")
    assert (spec.losses.logits, spec.losses.beta) == ("jsd", 0.5)
    assert spec.hyperparameters.temperature == 2.0
    assert spec.hyperparameters.teacher_top_k == 0
    assert spec.hyperparameters.teacher_signal == "top_k"
    assert spec.hyperparameters.early_stopping is not None
    assert spec.hyperparameters.early_stopping.metric == "val_perplexity"
    assert spec.student.model_dump() == {"arch": "pretrained", "file_id": "file_s"}


def test_with_task_is_idempotent() -> None:
    once = JobSpec.model_validate(written(student=LM_STUDENT)).with_task("causal_lm")
    assert once.with_task("causal_lm").model_dump() == once.model_dump()


def test_classification_keeps_todays_defaults() -> None:
    spec = JobSpec.model_validate(written()).with_task("classification")
    assert spec.model_dump() == JobSpec.model_validate(written(task="classification")).model_dump()
    assert (spec.losses.logits, spec.hyperparameters.temperature) == ("kl", 4.0)
    assert spec.hyperparameters.teacher_top_k is None and spec.generation is None


@pytest.mark.parametrize(
    ("more", "param"),
    [
        ({"hyperparameters": {"teacher_top_k": 8}}, "hyperparameters.teacher_top_k"),
        ({"hyperparameters": {"teacher_signal": "top_k"}}, "hyperparameters.teacher_signal"),
        ({"hyperparameters": {"teacher_draws": 32}}, "hyperparameters.teacher_draws"),
        ({"losses": {"logits": "reverse_kl"}}, "losses.logits"),
        ({"losses": {"beta": 0.3}}, "losses.beta"),
        ({"data": {"train_file_id": "file_d", "packing": True}}, "data.packing"),
        ({"generation": {}}, "generation"),
        ({"student": {"file_id": "file_s"}}, "student.file_id"),
        ({"sweep": {"logits": ["kl"]}}, "sweep.logits"),
        (
            {"hyperparameters": {"early_stopping": {"metric": "val_perplexity"}}},
            "hyperparameters.early_stopping.metric",
        ),
    ],
)
def test_a_language_model_field_is_refused_for_a_classifier(
    more: dict[str, Any], param: str
) -> None:
    message, where = refusal(JobSpec.model_validate(written(**more)), "classification")
    assert where == param
    assert message == f'{param} is for language models (task "causal_lm"), not classification.'


@pytest.mark.parametrize(
    ("more", "param"),
    [
        ({}, "student"),  # the default MLP
        ({"student": LM_STUDENT, "losses": {"logits": "kl"}}, "losses.logits"),
        ({"student": LM_STUDENT, "losses": {"beta": 0.5}}, "losses.beta"),
        (
            {"student": LM_STUDENT, "sweep": {"logits": ["forward_kl", "mse"]}},
            "sweep.logits.1",
        ),
        (
            {"student": LM_STUDENT, "losses": {"beta": 0.5}, "sweep": {"logits": ["reverse_kl"]}},
            "losses.beta",
        ),
        ({"student": LM_STUDENT, "losses": {"attention": {}}}, "losses.attention"),
        (
            {
                "student": LM_STUDENT,
                "losses": {"logits": "reverse_kl"},
                "hyperparameters": {"teacher_signal": "sampled"},
            },
            "hyperparameters.teacher_signal",
        ),
        (
            {
                "student": LM_STUDENT,
                "hyperparameters": {"teacher_signal": "top_k", "teacher_draws": 8},
            },
            "hyperparameters.teacher_draws",
        ),
        (
            {
                "student": LM_STUDENT,
                "sweep": {"logits": ["forward_kl", "jsd"]},
                "hyperparameters": {"teacher_signal": "sampled"},
            },
            "hyperparameters.teacher_signal",
        ),
        ({"student": LM_STUDENT, "export": ["onnx"]}, "export"),
        (
            {"student": LM_STUDENT, "teacher": {"file_id": "t", "arch": {"arch": "mlp"}}},
            "teacher.arch",
        ),
    ],
)
def test_a_classifier_field_is_refused_for_a_language_model(
    more: dict[str, Any], param: str
) -> None:
    message, where = refusal(JobSpec.model_validate(written(**more)), "causal_lm")
    assert where == param
    assert message.startswith(param)


@pytest.mark.parametrize(
    ("more", "signal"),
    [
        ({}, "sampled"),  # forward KL: draws are unbiased
        ({"losses": {"logits": "reverse_kl"}}, "top_k"),  # draws cannot serve these
        ({"losses": {"logits": "jsd"}}, "top_k"),
        ({"sweep": {"logits": ["forward_kl", "reverse_kl"]}}, "top_k"),  # one store for all
        ({"hyperparameters": {"teacher_signal": "top_k"}}, "top_k"),
    ],
)
def test_the_teacher_signal_is_sampled_unless_a_loss_needs_top_k(
    more: dict[str, Any], signal: str
) -> None:
    spec = JobSpec.model_validate(written(student=LM_STUDENT, **more)).with_task("causal_lm")
    assert spec.hyperparameters.teacher_signal == signal
    assert spec.hyperparameters.teacher_draws == (128 if signal == "sampled" else None)


def test_a_sweep_over_the_loss_gives_jsd_its_default_beta() -> None:
    spec = JobSpec.model_validate(
        written(student=LM_STUDENT, sweep={"logits": ["forward_kl", "jsd"]})
    ).with_task("causal_lm")
    assert (spec.losses.logits, spec.losses.beta) == ("forward_kl", 0.5)
    assert spec.sweep is not None and spec.sweep.logits == ["forward_kl", "jsd"]


def test_early_stopping_of_a_language_model_watches_its_metrics() -> None:
    spec = JobSpec.model_validate(
        written(student=LM_STUDENT, hyperparameters={"early_stopping": {"metric": "val_accuracy"}})
    ).with_task("causal_lm")
    with pytest.raises(SpecConflict, match="val_perplexity or val_loss"):
        check_early_stopping_metric(spec)


def test_student_layers_are_below_the_teachers_depth() -> None:
    check_student_layers([0, 3], 4)
    with pytest.raises(SpecConflict) as caught:
        check_student_layers([0, 4], 4)
    assert (caught.value.code, caught.value.param) == ("unsupported_arch", "student.layers")
    assert "the teacher has 4 layers (0 to 3)" in caught.value.message
