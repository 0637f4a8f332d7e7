"""Checks that run before any training, so a job that cannot work fails in seconds, not hours."""

import torch
from torch import nn

from jobspec import JobSpec, requirements
from jobspec.requirements import SpecConflict
from worker.engine.data import Dataset
from worker.engine.errors import LabelsRequired, ShapeMismatch, UnsupportedInput
from worker.engine.features import Features, has_features
from worker.engine.layer_losses import LayerLossSpec, LayerMatching
from worker.engine.students import StudentPlan
from worker.engine.tasks import Task
from worker.engine.teacher import Teacher


def check_requirements(spec: JobSpec, train: Dataset, val: Dataset) -> None:
    """The spec's needs of its data (jobspec.requirements, which the API checks on the uploads'
    facts), checked on the data as loaded: the labels a loss or early stopping needs."""
    try:
        requirements.check_early_stopping_metric(spec)
        requirements.check_labels(spec, train.y is not None, val.y is not None)
    except SpecConflict as conflict:
        if conflict.code == "labels_required":
            raise LabelsRequired(conflict.message) from None
        raise UnsupportedInput(conflict.message) from None


def check_inputs(
    teacher: Teacher, train: Dataset, val: Dataset, batch_size: int, task: Task
) -> int:
    """Run the teacher on one batch; return the number of classes K (for regression, the number
    of real outputs K)."""
    if val.input_shape != train.input_shape:
        raise ShapeMismatch(
            f"The validation data has shape (N, {_dims(val)}) but the training data has "
            f"(N, {_dims(train)}); they must match."
        )
    sample = train.x[:batch_size]
    num_classes = teacher.check(sample, task.min_outputs)
    task.check_labels("training", train.y, num_classes)
    task.check_labels("validation", val.y, num_classes)
    return num_classes


def check_student(plan: StudentPlan, sample: torch.Tensor, num_classes: int) -> nn.Module:
    """Build the student and run it on one batch; return it (the caller may look at its layers)."""
    student = plan.build().to(sample.device)
    with torch.no_grad():
        try:
            logits = student.eval()(sample)
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as e:
            raise ShapeMismatch(
                f"The student ({plan.arch['arch']}) cannot take data of shape "
                f"{tuple(sample.shape)}: {e}"
            ) from e
    if tuple(logits.shape) != (len(sample), num_classes):
        raise ShapeMismatch(
            f"The student returned shape {tuple(logits.shape)}, not ({len(sample)}, {num_classes})."
        )
    return student


def check_layer_losses(
    specs: list[LayerLossSpec], teacher: Teacher, student: nn.Module, sample: torch.Tensor
) -> tuple[Features, Features, list[str]]:
    """Pair the layers the spec's hidden and attention losses name (or propose a pairing), check
    every pair's shapes on one batch, and describe the pairing. Returns the student's and the
    teacher's features on the batch (their shapes size the projections) and the description."""
    if not teacher.has_features:
        raise UnsupportedInput(
            f"losses.{specs[0].kind} matches the teacher's layers, but a {teacher.format} teacher "
            "does not show them; give the teacher as state_dict or safetensors with its "
            "teacher.arch, or as a Hugging Face archive.",
            code="unsupported_loss",
        )
    if not has_features(student):
        raise UnsupportedInput(
            f"losses.{specs[0].kind} needs a student whose layers the engine can see.",
            code="unsupported_loss",
        )
    with torch.no_grad():
        student_features = student.forward_features(sample)  # type: ignore[operator]
    teacher_features = teacher.features(sample)
    matching = LayerMatching(specs, student_features, teacher_features)
    return student_features, teacher_features, matching.describe(student_features, teacher_features)


def _dims(data: Dataset) -> str:
    return ", ".join(map(str, data.input_shape))
