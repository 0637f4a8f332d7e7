"""Matching layers, not only outputs: hidden states (FitNets, TinyBERT) and attention
distributions (TinyBERT, MiniLM), on a mapping from student layers to teacher layers.

Hidden states come channels last (``Features``), so where the widths differ one learned
``nn.Linear`` per pair projects the student's width onto the teacher's; every other dimension
must agree. The projections train with the student and are dropped from its artifacts.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jobspec import HiddenLoss, Losses
from worker.engine.errors import ShapeMismatch, UnsupportedInput
from worker.engine.features import Features, check_layer_indices

Pairs = list[tuple[int, int]]  # (student layer, teacher layer)
# A model's hidden states by layer index: every layer's in a list, or only some by index.
Layers = Sequence[torch.Tensor] | Mapping[int, torch.Tensor]


@dataclass(frozen=True)
class LayerLossSpec:
    """One layer-matching term from the spec's ``losses``: ``metric`` is mse or cosine for hidden
    states, kl for attention; ``layers`` None lets the engine propose the mapping."""

    kind: str  # hidden | attention
    weight: float
    metric: str
    layers: Pairs | None


def layer_loss_specs(losses: Losses) -> list[LayerLossSpec]:
    specs = []
    for kind, given in (("hidden", losses.hidden), ("attention", losses.attention)):
        if given is None:
            continue
        specs.append(
            LayerLossSpec(
                kind,
                given.weight,
                given.metric if isinstance(given, HiddenLoss) else "kl",
                None if given.layers is None else [(s, t) for s, t in given.layers],
            )
        )
    return specs


def propose_pairs(student_layers: int, teacher_layers: int) -> Pairs:
    """Spread the student's layers evenly over the teacher's, the last onto the last (TinyBERT's
    uniform mapping): 2 student layers on 6 teacher layers pair (0, 2) and (1, 5)."""
    return [(i, (i + 1) * teacher_layers // student_layers - 1) for i in range(student_layers)]


class LayerMatching(nn.Module):
    """The layer-matching terms of one training run, with their learned projections."""

    def __init__(self, specs: list[LayerLossSpec], student: Features, teacher: Features):
        super().__init__()
        self.specs = specs
        self.pairs: dict[str, Pairs] = {}
        self.projections = nn.ModuleList()
        for spec in specs:
            pairs = spec.layers or propose_pairs(*_depths(spec.kind, student, teacher))
            _check_pairs(spec.kind, pairs, student, teacher)
            self.pairs[spec.kind] = pairs
            if spec.kind == "hidden":
                self.projections.extend(
                    _projection(student.hidden[s].shape[-1], teacher.hidden[t].shape[-1])
                    for s, t in pairs
                )

    def forward(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        """The unweighted terms by kind ("hidden", "attention")."""
        terms = {}
        mask = student.mask
        for spec in self.specs:
            if spec.kind == "hidden":
                terms["hidden"] = self.hidden(student.hidden, teacher.hidden, mask)
                continue
            assert student.attentions is not None and teacher.attentions is not None
            losses = [
                _attention_loss(student.attentions[s], teacher.attentions[t], mask)
                for s, t in self.pairs[spec.kind]
            ]
            terms[spec.kind] = torch.stack(losses).mean()
        return terms

    def hidden(self, student: Layers, teacher: Layers, mask: torch.Tensor | None) -> torch.Tensor:
        """The unweighted hidden-state term, from each paired layer's states (a caller that
        records only the paired layers gives them by index). In float32 throughout: under
        autocast the student's states come in half precision, the projections are float32."""
        metric = next(spec.metric for spec in self.specs if spec.kind == "hidden")
        losses = [
            _hidden_loss(proj(student[s].float()), teacher[t], metric, mask)
            for proj, (s, t) in zip(self.projections, self.pairs["hidden"], strict=True)
        ]
        return torch.stack(losses).mean()

    def describe(self, student: Features, teacher: Features) -> list[str]:
        """One line per pair, for the job's log: the layers, their shapes, any projection."""
        lines = []
        for spec in self.specs:
            for s, t in self.pairs[spec.kind]:
                if spec.kind == "hidden":
                    a, b = student.hidden[s], teacher.hidden[t]
                else:
                    assert student.attentions is not None and teacher.attentions is not None
                    a, b = student.attentions[s], teacher.attentions[t]
                line = (
                    f"{spec.kind} {spec.metric}: student layer {s} {_shape(a)} -> "
                    f"teacher layer {t} {_shape(b)}"
                )
                if spec.kind == "hidden" and a.shape[-1] != b.shape[-1]:
                    line += f" through a learned projection {a.shape[-1]} -> {b.shape[-1]}"
                lines.append(line)
        return lines


def _depths(kind: str, student: Features, teacher: Features) -> tuple[int, int]:
    if kind == "hidden":
        return len(student.hidden), len(teacher.hidden)
    _need_attention(student, teacher)
    assert student.attentions is not None and teacher.attentions is not None
    return len(student.attentions), len(teacher.attentions)


def _need_attention(student: Features, teacher: Features) -> None:
    for who, features in (("student", student), ("teacher", teacher)):
        if not features.attentions:
            raise UnsupportedInput(
                f"Attention transfer needs attention layers, and the {who} has none; use a "
                "transformer (or Hugging Face) student and teacher, or drop losses.attention.",
                code="unsupported_loss",
            )


def _check_pairs(kind: str, pairs: Pairs, student: Features, teacher: Features) -> None:
    if kind == "attention":
        _need_attention(student, teacher)
    layers = student.hidden if kind == "hidden" else student.attentions
    teacher_layers = teacher.hidden if kind == "hidden" else teacher.attentions
    assert layers is not None and teacher_layers is not None
    field = f"losses.{kind}.layers"
    check_layer_indices(field, (s for s, _ in pairs), len(layers), who="student")
    check_layer_indices(field, (t for _, t in pairs), len(teacher_layers))
    for s, t in pairs:
        a, b = layers[s], teacher_layers[t]
        same = a.shape[:-1] == b.shape[:-1] if kind == "hidden" else _attention_fits(a, b)
        if not same:
            hint = (
                "only the width (last dimension) may differ, through a learned projection"
                if kind == "hidden"
                else "both must attend over the same sequence length"
            )
            raise ShapeMismatch(
                f"losses.{kind}: student layer {s} gives {_shape(a)} but teacher layer {t} gives "
                f"{_shape(b)}; {hint}. Pair layers whose shapes agree."
            )


def _attention_fits(student: torch.Tensor, teacher: torch.Tensor) -> bool:
    return student.shape[0] == teacher.shape[0] and student.shape[2:] == teacher.shape[2:]


def _projection(student_width: int, teacher_width: int) -> nn.Module:
    if student_width == teacher_width:
        return nn.Identity()
    return nn.Linear(student_width, teacher_width)


def _hidden_loss(
    student: torch.Tensor, teacher: torch.Tensor, metric: str, mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean over positions of the squared error per feature (mse) or of 1 - cosine similarity
    (cosine); for sequences only the real tokens count, not the padding."""
    student, teacher = student.float(), teacher.float()
    if metric == "cosine":
        per_position = 1 - F.cosine_similarity(student, teacher, dim=-1)
    else:
        per_position = (student - teacher).pow(2).mean(dim=-1)
    return _masked_mean(per_position, mask)


def _attention_loss(
    student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """KL(teacher || student) between each query's attention distribution, per head where the
    head counts agree, else between the distributions averaged over heads."""
    student, teacher = student.float(), teacher.float()
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    eps = torch.finfo(torch.float32).tiny
    kl = (teacher * (teacher.clamp_min(eps).log() - student.clamp_min(eps).log())).sum(dim=-1)
    return _masked_mean(kl.mean(dim=1), mask)  # (B, L) after averaging the heads


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``values`` (B, ...); with a (B, L) mask and (B, L) values, padding positions are left out."""
    if mask is None or values.shape != mask.shape:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _shape(t: torch.Tensor) -> str:
    return "(B, " + ", ".join(map(str, t.shape[1:])) + ")"
