"""Layer matching on its own: the proposed mapping, the losses' values and gradients, the
projections, and the errors that name the layers."""

import pytest
import torch

from worker.engine.errors import ShapeMismatch, UnsupportedInput
from worker.engine.features import Features
from worker.engine.layer_losses import LayerLossSpec, LayerMatching, propose_pairs
from worker.engine.models import build_model

TRANSFORMER = {"arch": "transformer", "num_layers": 2, "hidden_size": 16, "num_heads": 2}


def _spec(kind: str, metric: str = "mse", layers=None, weight: float = 1.0) -> LayerLossSpec:
    return LayerLossSpec(kind, weight, metric if kind == "hidden" else "kl", layers)


@pytest.mark.parametrize(
    ("student", "teacher", "pairs"),
    [
        (2, 6, [(0, 2), (1, 5)]),
        (3, 12, [(0, 3), (1, 7), (2, 11)]),
        (4, 4, [(0, 0), (1, 1), (2, 2), (3, 3)]),
        (1, 3, [(0, 2)]),
    ],
)
def test_the_proposed_mapping_spreads_layers_and_ends_on_the_last(
    student: int, teacher: int, pairs: list[tuple[int, int]]
) -> None:
    assert propose_pairs(student, teacher) == pairs


def test_identical_features_cost_nothing() -> None:
    torch.manual_seed(0)
    model = build_model(TRANSFORMER, (12,), 3)
    features = model.forward_features(torch.randn(4, 12))
    specs = [_spec("hidden"), _spec("hidden", "cosine"), _spec("attention")]

    for spec in specs:
        terms = LayerMatching([spec], features, features)(features, features)
        torch.testing.assert_close(terms[spec.kind], torch.tensor(0.0), atol=1e-6, rtol=0)


def test_hidden_mse_is_the_mean_squared_error_per_feature() -> None:
    student = Features(torch.zeros(2, 3), [torch.zeros(2, 4)])
    teacher = Features(torch.zeros(2, 3), [torch.full((2, 4), 3.0)])

    terms = LayerMatching([_spec("hidden")], student, teacher)(student, teacher)

    torch.testing.assert_close(terms["hidden"], torch.tensor(9.0))


def test_cosine_ignores_scale_and_mse_does_not() -> None:
    h = torch.randn(5, 8)
    student, teacher = Features(h, [h]), Features(h, [10 * h])

    cosine = LayerMatching([_spec("hidden", "cosine")], student, teacher)(student, teacher)
    squared = LayerMatching([_spec("hidden")], student, teacher)(student, teacher)

    torch.testing.assert_close(cosine["hidden"], torch.tensor(0.0), atol=1e-6, rtol=0)
    assert squared["hidden"].item() > 1.0


def test_widths_that_differ_get_a_learned_projection_that_trains() -> None:
    torch.manual_seed(0)
    student = Features(torch.zeros(8, 2), [torch.randn(8, 4)])
    teacher = Features(torch.zeros(8, 2), [torch.randn(8, 6)])
    matching = LayerMatching([_spec("hidden")], student, teacher)
    optimizer = torch.optim.Adam(matching.parameters(), lr=0.05)
    before = matching(student, teacher)["hidden"].item()

    for _ in range(100):
        optimizer.zero_grad()
        matching(student, teacher)["hidden"].backward()
        optimizer.step()

    assert [tuple(p.shape) for p in matching.parameters()] == [(6, 4), (6,)]
    assert matching(student, teacher)["hidden"].item() < before / 2


def test_padding_does_not_count() -> None:
    """Sequences: only real tokens (mask 1) enter the hidden-state loss."""
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    student_h = torch.zeros(2, 3, 4)
    teacher_h = torch.zeros(2, 3, 4)
    teacher_h[mask == 0] = 100.0  # wildly different, but only where there is padding
    student = Features(torch.zeros(2, 2), [student_h], mask=mask)
    teacher = Features(torch.zeros(2, 2), [teacher_h], mask=mask)

    terms = LayerMatching([_spec("hidden")], student, teacher)(student, teacher)

    torch.testing.assert_close(terms["hidden"], torch.tensor(0.0))


def test_attention_kl_is_per_head_and_averages_heads_when_counts_differ() -> None:
    uniform = torch.full((1, 2, 2, 2), 0.5)
    sharp = torch.tensor([[[[0.9, 0.1], [0.9, 0.1]], [[0.1, 0.9], [0.1, 0.9]]]])
    teacher = Features(torch.zeros(1, 2), [torch.zeros(1, 2, 4)], [sharp])
    same_heads = Features(torch.zeros(1, 2), [torch.zeros(1, 2, 4)], [uniform])
    one_head = Features(torch.zeros(1, 2), [torch.zeros(1, 2, 4)], [uniform[:, :1]])

    per_head = LayerMatching([_spec("attention")], same_heads, teacher)(same_heads, teacher)
    averaged = LayerMatching([_spec("attention")], one_head, teacher)(one_head, teacher)

    kl = 0.9 * torch.log(torch.tensor(0.9 / 0.5)) + 0.1 * torch.log(torch.tensor(0.1 / 0.5))
    torch.testing.assert_close(per_head["attention"], kl)
    # The teacher's heads average to uniform, which is what the one-headed student has.
    torch.testing.assert_close(averaged["attention"], torch.tensor(0.0), atol=1e-6, rtol=0)


def test_a_pair_out_of_range_names_the_layer_and_the_depth() -> None:
    features = Features(torch.zeros(2, 2), [torch.zeros(2, 4), torch.zeros(2, 4)])

    with pytest.raises(ShapeMismatch, match=r"teacher layer 5, but the teacher has 2 layers"):
        LayerMatching([_spec("hidden", layers=[(0, 5)])], features, features)


def test_shapes_that_differ_beyond_the_width_name_both_layers() -> None:
    student = Features(torch.zeros(2, 2), [torch.zeros(2, 4, 4, 8)])
    teacher = Features(torch.zeros(2, 2), [torch.zeros(2, 2, 2, 8), torch.zeros(2, 2, 2, 8)])

    with pytest.raises(ShapeMismatch) as info:
        LayerMatching([_spec("hidden", layers=[(0, 1)])], student, teacher)

    assert "student layer 0 gives (B, 4, 4, 8) but teacher layer 1 gives (B, 2, 2, 8)" in str(
        info.value
    )


def test_attention_transfer_needs_attention_on_both_sides() -> None:
    mlp = build_model({"arch": "mlp", "hidden_sizes": [8]}, (12,), 3).forward_features(
        torch.randn(2, 12)
    )
    transformer = build_model(TRANSFORMER, (12,), 3).forward_features(torch.randn(2, 12))

    with pytest.raises(UnsupportedInput, match="the student has none") as info:
        LayerMatching([_spec("attention")], mlp, transformer)
    assert info.value.code == "unsupported_loss"


def test_describe_names_every_pair_with_shapes_and_projection() -> None:
    student = Features(torch.zeros(2, 2), [torch.zeros(2, 4)])
    teacher = Features(torch.zeros(2, 2), [torch.zeros(2, 6), torch.zeros(2, 6)])
    matching = LayerMatching([_spec("hidden")], student, teacher)

    assert matching.describe(student, teacher) == [
        "hidden mse: student layer 0 (B, 4) -> teacher layer 1 (B, 6) "
        "through a learned projection 4 -> 6"
    ]


def test_half_precision_states_from_autocast_go_through_the_projection_in_float32() -> None:
    student = Features(torch.zeros(2, 3), [torch.randn(2, 5, 4).bfloat16()])
    teacher = Features(torch.zeros(2, 3), [torch.randn(2, 5, 8)])
    matching = LayerMatching([_spec("hidden")], student, teacher)

    term = matching(student, teacher)["hidden"]

    assert term.dtype == torch.float32 and torch.isfinite(term)
