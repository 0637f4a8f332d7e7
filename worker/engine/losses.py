"""The contract's losses. Classification: ``alpha * T^2 * KL(p_teacher || p_student) +
(1 - alpha) * CE``, or with ``losses.logits = "mse"``, ``alpha * MSE(student logits, teacher
logits) + (1 - alpha) * CE``. Regression: ``alpha * MSE(student, teacher) + (1 - alpha) *
MSE(student, y)``. Layer-matching terms are added on top of these (``layer_losses``).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossTerms(NamedTuple):
    """``total`` is what we back-propagate; ``kd`` (already scaled by T^2) and ``ce`` are the
    unweighted terms for reporting, or None where alpha switched the term off; ``hidden`` and
    ``attention`` likewise, for the layer-matching terms, when the spec asks for them."""

    total: torch.Tensor
    kd: torch.Tensor | None
    ce: torch.Tensor | None
    hidden: torch.Tensor | None = None
    attention: torch.Tensor | None = None


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, averaged over the batch.

    Softmax in float32 so half-precision logits do not saturate; T^2 keeps the gradient scale
    independent of the temperature (Hinton et al., 2015).
    """
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
    logits: str = "kl",
) -> LossTerms:
    """Skips the CE term entirely at alpha == 1 (labels may be None) and the KD term at
    alpha == 0 (teacher_logits may be None), so neither costs anything when unused. ``logits``
    "mse" matches the raw logits (no temperature) instead of the softened distributions."""
    kd = ce = None
    if alpha > 0:
        assert teacher_logits is not None, "alpha > 0 needs the teacher's logits"
        if logits == "mse":
            kd = F.mse_loss(student_logits.float(), teacher_logits.float())
        else:
            kd = kd_loss(student_logits, teacher_logits, temperature)
    if alpha < 1:
        assert labels is not None, "alpha < 1 needs labels"
        ce = F.cross_entropy(student_logits.float(), labels)
    if kd is None:
        assert ce is not None
        return LossTerms(ce, None, ce)
    total = kd if ce is None else alpha * kd + (1 - alpha) * ce
    return LossTerms(total, kd, ce)


def regression_loss(
    student_outputs: torch.Tensor,
    teacher_outputs: torch.Tensor | None,
    targets: torch.Tensor | None,
    alpha: float,
) -> LossTerms:
    """``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, y)`` for real-valued outputs.

    There is no softmax, so no temperature. The terms come back in the ``kd`` (teacher) and
    ``ce`` (labels) slots, so reporting treats both tasks alike; as above, a term alpha switches
    off is skipped and may be given as None.
    """
    student = student_outputs.float()
    kd = ce = None
    if alpha > 0:
        assert teacher_outputs is not None, "alpha > 0 needs the teacher's outputs"
        kd = F.mse_loss(student, teacher_outputs.float())
    if alpha < 1:
        assert targets is not None, "alpha < 1 needs labels"
        ce = F.mse_loss(student, targets.float())
    if kd is None:
        assert ce is not None
        return LossTerms(ce, None, ce)
    total = kd if ce is None else alpha * kd + (1 - alpha) * ce
    return LossTerms(total, kd, ce)
