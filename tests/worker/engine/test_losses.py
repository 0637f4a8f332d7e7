import math

import pytest
import torch
from torch.testing import assert_close

from worker.engine.losses import distillation_loss

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
LABELS = torch.tensor([1, 2])


def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_loss(temperature: float, alpha: float) -> tuple[float, float, float]:
    """The contract's formula, written out in plain Python."""
    kl = ce = 0.0
    for s, t, y in zip(STUDENT.tolist(), TEACHER.tolist(), LABELS.tolist(), strict=True):
        p, q = _softmax(t, temperature), _softmax(s, temperature)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        ce += -math.log(_softmax(s, 1.0)[y])
    kd = temperature**2 * kl / len(STUDENT)
    ce /= len(STUDENT)
    return alpha * kd + (1 - alpha) * ce, kd, ce


@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (2.0, 0.3), (4.0, 0.9)])
def test_loss_matches_a_hand_computation(temperature: float, alpha: float) -> None:
    total, kd, ce = _hand_loss(temperature, alpha)

    terms = distillation_loss(STUDENT, TEACHER, LABELS, temperature, alpha)

    assert_close(terms.total, torch.tensor(total))
    assert_close(terms.kd, torch.tensor(kd))
    assert_close(terms.ce, torch.tensor(ce))


def test_alpha_one_is_pure_distillation_and_needs_no_labels() -> None:
    terms = distillation_loss(STUDENT, TEACHER, None, 2.0, 1.0)

    assert terms.ce is None
    assert_close(terms.total, torch.tensor(_hand_loss(2.0, 1.0)[1]))


def test_alpha_zero_is_cross_entropy_and_needs_no_teacher() -> None:
    terms = distillation_loss(STUDENT, None, LABELS, 2.0, 0.0)

    assert terms.kd is None
    assert_close(terms.total, torch.tensor(_hand_loss(2.0, 0.0)[2]))


def test_identical_logits_give_zero_kd() -> None:
    terms = distillation_loss(TEACHER, TEACHER, None, 4.0, 1.0)

    assert_close(terms.total, torch.tensor(0.0))


def test_half_precision_logits_are_reduced_in_float32() -> None:
    terms = distillation_loss(STUDENT.half(), TEACHER.half(), LABELS, 2.0, 0.5)

    assert terms.total.dtype == torch.float32
    assert_close(terms.total, torch.tensor(_hand_loss(2.0, 0.5)[0]), atol=1e-2, rtol=1e-2)
