"""What a task means to the engine: its loss, its validation metrics, its final quality report and
how a sweep picks the better run. The recipe is written once against ``Task``; a new kind of job
(``causal_lm``) is one more class here, not an ``if`` in the loop, and one more entry in
``jobspec.requirements.EARLY_STOPPING_METRICS`` (the metrics its ``validate`` reports).

``outputs`` are the model's raw outputs: class logits for classification, real values for
regression. ``labels`` are class ids (N,) or real targets (N, K), or None when the data has none.
"""

from typing import Any, Protocol

import torch

from jobspec import JobSpec
from worker.engine.errors import ShapeMismatch
from worker.engine.evaluation import accuracy, agreement, kl_divergence, mse, r2
from worker.engine.losses import LossTerms, distillation_loss, regression_loss

Metrics = dict[str, Any]


class Ranking(Protocol):
    """How a sweep picks the better run: all a sweep needs of a task."""

    def sweep_metric(self, labelled: bool) -> str:
        """The row field ``better`` ranks on first."""
        ...

    def better(self, row: Metrics, best: Metrics) -> bool:
        """Whether sweep row ``row`` beats ``best``; exact ties keep the earlier run."""
        ...


class Task(Ranking, Protocol):
    name: str  # the spec's task; also how data files read their labels
    outputs_word: str  # what the teacher's K outputs are, for the log: classes | outputs
    min_outputs: int  # the fewest outputs a teacher may give

    def loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> LossTerms:
        """The training loss: ``alpha`` on the teacher's term, ``1 - alpha`` on the labels'."""
        ...

    def validate(
        self,
        outputs: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> Metrics:
        """The epoch-end metrics (val_loss among them; None where labels are missing)."""
        ...

    def quality(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> Metrics:
        """The final metrics: the student next to the teacher and the labels."""
        ...

    def baseline_quality(self, baseline: torch.Tensor, labels: torch.Tensor | None) -> Metrics:
        """The labels-only baseline's final metrics, prefixed ``baseline_``."""
        ...

    def sweep_row(self, val: Metrics, outputs: torch.Tensor, teacher: torch.Tensor) -> Metrics:
        """What a finished sweep run is judged on, from its validation metrics."""
        ...

    def check_labels(self, name: str, labels: torch.Tensor | None, outputs: int) -> None:
        """Refuse labels that the teacher's ``outputs`` cannot match (``name``: training...)."""
        ...


class Classification:
    """The teacher gives class logits: KL (or MSE) on the softened logits plus CE on the labels."""

    name, outputs_word, min_outputs = "classification", "classes", 2

    def __init__(self, logit_loss: str = "kl"):
        self.logit_loss = logit_loss  # kl | mse

    def loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> LossTerms:
        return distillation_loss(student, teacher, labels, temperature, alpha, self.logit_loss)

    def validate(
        self,
        outputs: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> Metrics:
        val_loss = None
        if labels is not None or alpha == 1:
            # The validation loss is always the KL one: comparable across logit losses.
            val_loss = distillation_loss(outputs, teacher, labels, temperature, alpha).total.item()
        return {
            "val_accuracy": accuracy(outputs, labels),
            "val_loss": val_loss,
            "val_agreement": agreement(outputs, teacher),
        }

    def quality(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> Metrics:
        return {
            "teacher_accuracy": accuracy(teacher, labels),
            "student_accuracy": accuracy(student, labels),
            "agreement": agreement(student, teacher),
            "kl_divergence": kl_divergence(student, teacher),
        }

    def baseline_quality(self, baseline: torch.Tensor, labels: torch.Tensor | None) -> Metrics:
        return {"baseline_accuracy": accuracy(baseline, labels)}

    def sweep_row(self, val: Metrics, outputs: torch.Tensor, teacher: torch.Tensor) -> Metrics:
        return {
            "val_accuracy": val["val_accuracy"],
            "val_loss": val["val_loss"],
            "val_kl": kl_divergence(outputs, teacher),
        }

    def sweep_metric(self, labelled: bool) -> str:
        return "val_accuracy" if labelled else "val_kl"

    def better(self, row: Metrics, best: Metrics) -> bool:
        """Higher accuracy, lower KL to the teacher breaking ties (or alone without labels)."""
        accuracy_, best_accuracy = row["val_accuracy"], best["val_accuracy"]
        if accuracy_ is not None and best_accuracy is not None and accuracy_ != best_accuracy:
            return bool(accuracy_ > best_accuracy)
        return bool(row["val_kl"] < best["val_kl"])

    def check_labels(self, name: str, labels: torch.Tensor | None, outputs: int) -> None:
        if labels is not None and int(labels.max()) >= outputs:
            raise ShapeMismatch(
                f"The {name} labels go up to {int(labels.max())}, but the teacher has only "
                f"{outputs} outputs (class ids 0 to {outputs - 1})."
            )


class Regression:
    """The teacher gives K real outputs: MSE to the teacher and to the targets; no temperature."""

    name, outputs_word, min_outputs = "regression", "outputs", 1

    def loss(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> LossTerms:
        return regression_loss(student, teacher, labels, alpha)

    def validate(
        self,
        outputs: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None,
        temperature: float,
        alpha: float,
    ) -> Metrics:
        val_loss = None
        if labels is not None or alpha == 1:
            val_loss = regression_loss(outputs, teacher, labels, alpha).total.item()
        return {
            "val_loss": val_loss,
            "val_mse": mse(outputs, labels),
            "val_agreement_mse": mse(outputs, teacher),
        }

    def quality(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> Metrics:
        return {
            "teacher_r2": r2(teacher, labels),
            "student_r2": r2(student, labels),
            "teacher_mse": mse(teacher, labels),
            "student_mse": mse(student, labels),
            "agreement_mse": mse(student, teacher),
        }

    def baseline_quality(self, baseline: torch.Tensor, labels: torch.Tensor | None) -> Metrics:
        return {"baseline_r2": r2(baseline, labels), "baseline_mse": mse(baseline, labels)}

    def sweep_row(self, val: Metrics, outputs: torch.Tensor, teacher: torch.Tensor) -> Metrics:
        return dict(val)

    def sweep_metric(self, labelled: bool) -> str:
        return "val_mse" if labelled else "val_agreement_mse"

    def better(self, row: Metrics, best: Metrics) -> bool:
        """Lower MSE on the targets, lower MSE to the teacher breaking ties (or alone)."""
        error, best_error = row["val_mse"], best["val_mse"]
        if error is not None and best_error is not None and error != best_error:
            return bool(error < best_error)
        return bool(row["val_agreement_mse"] < best["val_agreement_mse"])

    def check_labels(self, name: str, labels: torch.Tensor | None, outputs: int) -> None:
        if labels is not None and labels.shape[1] != outputs:
            raise ShapeMismatch(
                f"The {name} targets y have {labels.shape[1]} value(s) per row, but the teacher "
                f"returns {outputs} output(s); they must match."
            )


def task_of(spec: JobSpec) -> Task:
    """The spec's task, chosen once per job."""
    if spec.task == "regression":
        return Regression()
    return Classification(spec.losses.logits)
