"""Checks that run before any training, so a job that cannot work fails in seconds, not hours."""

import torch
from torch import nn

from worker.engine.data import Dataset
from worker.engine.errors import LabelsRequired, ShapeMismatch, UnsupportedInput
from worker.engine.features import Features, has_features
from worker.engine.layer_losses import LayerLossSpec, LayerMatching
from worker.engine.students import StudentPlan
from worker.engine.tasks import Task
from worker.engine.teacher import Teacher


def check_labels_present(train: Dataset, alpha: float, baseline: bool) -> None:
    if train.y is not None:
        return
    if alpha < 1:
        raise LabelsRequired(
            f"alpha is {alpha}, which mixes in a loss on labels, but the training data has no "
            "labels; set alpha to 1.0 to learn from the teacher alone, or add labels (y)."
        )
    if baseline:
        raise LabelsRequired(
            "baseline trains the student on labels alone, but the training data has no labels; "
            "turn baseline off or add labels (y)."
        )


def check_early_stopping(metric: str, val: Dataset, min_alpha: float, baseline: bool) -> None:
    """Early stopping needs its metric at every epoch end: accuracy needs labels, and so does the
    validation loss wherever it has a label term (alpha below 1, or the baseline)."""
    if val.y is not None:
        return
    if metric == "val_accuracy":
        raise LabelsRequired(
            "early_stopping watches val_accuracy, but the validation data has no labels; "
            "use the metric val_loss with alpha 1.0, or give labelled validation data."
        )
    if min_alpha < 1 or baseline:
        raise LabelsRequired(
            "early_stopping watches val_loss, which has a label term here (alpha below 1.0, or "
            "the baseline), but the validation data has no labels; give labelled validation data."
        )


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
