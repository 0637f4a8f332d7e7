"""The language-model losses: chunked, over masked target tokens, in float32, against a stored
top-k signal or dense teacher logits."""

import pytest
import torch
import torch.nn.functional as F

from worker.engine.lm.losses import DIVERGENCES, divergence, lm_loss, loss_from_hidden
from worker.engine.lm.signal import TopKSignal, sampled_signal, top_k_signal
from worker.engine.losses import kd_loss

B, L, V, H = 2, 13, 40, 6
OPTIONS = {"temperature": 2.0, "alpha": 0.7}


@pytest.fixture
def batch() -> dict:
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(B, L, generator=generator) > 0.3
    mask[:, :2] = False  # a prompt
    mask[1, -3:] = False  # padding
    return {
        "hidden": torch.randn(B, L, H, generator=generator),
        "weight": torch.randn(V, H, generator=generator),
        "teacher": 3 * torch.randn(B, L, V, generator=generator),
        "mask": mask,
        "labels": torch.randint(0, V, (B, L), generator=generator),
    }


def student_logits(batch: dict) -> torch.Tensor:
    return (batch["hidden"] @ batch["weight"].T).requires_grad_()


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_top_k_with_the_whole_vocabulary_is_the_dense_loss(batch: dict, kind, temperature) -> None:
    logits = student_logits(batch)
    signal = top_k_signal(batch["teacher"], batch["mask"], k=V)
    args = {"kind": kind, "temperature": temperature, "alpha": 0.7}
    dense = lm_loss(logits, batch["mask"], batch["teacher"], batch["labels"], **args)
    stored = lm_loss(logits, batch["mask"], signal, batch["labels"], **args)
    torch.testing.assert_close(stored.total, dense.total)
    (dense_grad,) = torch.autograd.grad(dense.total, logits)
    (stored_grad,) = torch.autograd.grad(stored.total, logits)
    torch.testing.assert_close(stored_grad, dense_grad)


def test_a_top_k_signal_differs_from_the_dense_loss_but_keeps_its_rest_bucket(batch: dict) -> None:
    """With k < vocab the loss is the (k+1)-bucket one: smaller than the dense KL (grouping
    tokens can only lose divergence), and not zero."""
    logits = student_logits(batch)
    dense = lm_loss(logits, batch["mask"], batch["teacher"]).total
    top8 = lm_loss(logits, batch["mask"], top_k_signal(batch["teacher"], batch["mask"], k=8)).total
    assert 0 < top8 < dense


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("teacher_kind", ["dense", "top_k"])
def test_chunked_equals_unchunked(batch: dict, kind, teacher_kind) -> None:
    teacher = batch["teacher"]
    if teacher_kind == "top_k":
        teacher = top_k_signal(teacher, batch["mask"], k=5)
    logits = student_logits(batch)
    whole = lm_loss(logits, batch["mask"], teacher, batch["labels"], kind=kind, chunk_size=B * L)
    (whole_grad,) = torch.autograd.grad(whole.total, logits)
    for chunk_size in (1, 4, L, 7 * L):  # 4 divides neither L nor B * L
        chunked = lm_loss(
            logits, batch["mask"], teacher, batch["labels"], kind=kind, chunk_size=chunk_size
        )
        torch.testing.assert_close(chunked.total, whole.total)
        (grad,) = torch.autograd.grad(chunked.total, logits)
        torch.testing.assert_close(grad, whole_grad)


@pytest.mark.parametrize("kind", DIVERGENCES)
def test_the_hidden_state_path_equals_the_logits_path(batch: dict, kind) -> None:
    signal = top_k_signal(batch["teacher"], batch["mask"], k=5)
    hidden = batch["hidden"].clone().requires_grad_()
    weight = batch["weight"].clone().requires_grad_()
    args = {"kind": kind, **OPTIONS}
    via_logits = lm_loss(hidden @ weight.T, batch["mask"], signal, batch["labels"], **args)
    expected = torch.autograd.grad(via_logits.total, (hidden, weight))
    via_hidden = loss_from_hidden(
        hidden, weight, batch["mask"], signal, batch["labels"], chunk_size=5, **args
    )
    torch.testing.assert_close(via_hidden.total, via_logits.total)
    torch.testing.assert_close(via_hidden.kd, via_logits.kd)
    torch.testing.assert_close(via_hidden.ce, via_logits.ce)
    for got, want in zip(
        torch.autograd.grad(via_hidden.total, (hidden, weight)), expected, strict=True
    ):
        torch.testing.assert_close(got, want)


def test_the_hidden_state_path_takes_the_heads_bias(batch: dict) -> None:
    bias = torch.randn(V)
    hidden, weight = batch["hidden"], batch["weight"]
    args = (batch["mask"], batch["teacher"], batch["labels"])
    expected = lm_loss(hidden @ weight.T + bias, *args, **OPTIONS).total
    got = loss_from_hidden(hidden, weight, *args, lm_head_bias=bias, chunk_size=3, **OPTIONS).total
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("teacher_kind", ["dense", "top_k"])
def test_masked_out_tokens_contribute_nothing(batch: dict, teacher_kind) -> None:
    mask = batch["mask"]
    teacher = batch["teacher"]
    logits = student_logits(batch)
    signal = top_k_signal(teacher, mask, k=5) if teacher_kind == "top_k" else None
    loss = lm_loss(
        logits, mask, signal if signal is not None else teacher, batch["labels"], **OPTIONS
    )
    (grad,) = torch.autograd.grad(loss.total, logits)
    assert grad[~mask].abs().max() == 0
    assert grad[mask].abs().sum(-1).min() > 0

    # Anything at prompt and padding positions (student, teacher, labels) changes nothing.
    noise = torch.where(mask.unsqueeze(-1), 0.0, 100.0)
    other_labels = torch.where(mask, batch["labels"], (batch["labels"] + 1) % V)
    other_teacher = signal if signal is not None else teacher + noise.flip(-1)
    again = lm_loss(logits + noise, mask, other_teacher, other_labels, **OPTIONS)
    torch.testing.assert_close(again.total, loss.total)

    # The average is per target token: the dense forward KL of the masked rows alone.
    expected_kd = kd_loss(logits[mask], teacher[mask], OPTIONS["temperature"])
    expected_ce = F.cross_entropy(logits[mask].float(), batch["labels"][mask])
    if signal is None:
        torch.testing.assert_close(loss.kd, expected_kd)
    torch.testing.assert_close(loss.ce, expected_ce)
    torch.testing.assert_close(loss.total, 0.7 * loss.kd + 0.3 * loss.ce)


def test_alpha_switches_terms_off(batch: dict) -> None:
    logits = student_logits(batch)
    only_kd = lm_loss(logits, batch["mask"], batch["teacher"], labels=None, alpha=1.0)
    assert only_kd.ce is None and only_kd.total is only_kd.kd
    only_ce = lm_loss(logits, batch["mask"], teacher=None, labels=batch["labels"], alpha=0.0)
    assert only_ce.kd is None
    torch.testing.assert_close(
        only_ce.total, F.cross_entropy(logits[batch["mask"]], batch["labels"][batch["mask"]])
    )
    with pytest.raises(ValueError, match="needs the teacher"):
        lm_loss(logits, batch["mask"], None, batch["labels"], alpha=0.5)
    with pytest.raises(ValueError, match="needs labels"):
        lm_loss(logits, batch["mask"], batch["teacher"], None, alpha=0.5)


def test_a_signal_of_the_wrong_length_is_refused(batch: dict) -> None:
    signal = top_k_signal(batch["teacher"], batch["mask"], k=5)
    with pytest.raises(ValueError, match="tokens, the mask"):
        lm_loss(student_logits(batch), batch["mask"], signal.slice(1, signal.tokens))


@pytest.mark.parametrize("teacher_kind", ["dense", "top_k"])
def test_gradients_reach_the_student_only(batch: dict, teacher_kind) -> None:
    teacher = batch["teacher"].clone().requires_grad_()
    if teacher_kind == "top_k":
        signal = top_k_signal(batch["teacher"], batch["mask"], k=5)
        signal.logprobs.requires_grad_()
        signal.tail.requires_grad_()
    logits = student_logits(batch)
    used = teacher if teacher_kind == "dense" else signal
    lm_loss(logits, batch["mask"], used, batch["labels"], kind="jsd", **OPTIONS).total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    if teacher_kind == "dense":
        assert teacher.grad is None
    else:
        assert signal.logprobs.grad is None and signal.tail.grad is None


def test_jsd_at_beta_0_and_1_is_forward_and_reverse_kl(batch: dict) -> None:
    logits = student_logits(batch)
    args = (logits, batch["mask"], top_k_signal(batch["teacher"], batch["mask"], k=5))
    forward = lm_loss(*args, kind="forward_kl").total
    reverse = lm_loss(*args, kind="reverse_kl").total
    assert forward != reverse
    torch.testing.assert_close(lm_loss(*args, kind="jsd", beta=0.0).total, forward)
    torch.testing.assert_close(lm_loss(*args, kind="jsd", beta=1.0).total, reverse)


def test_jsd_tends_to_forward_and_reverse_kl_scaled_by_its_weight() -> None:
    """GKD's limits: JSD(beta) / beta -> KL(p || q) as beta -> 0, and JSD(beta) / (1 - beta)
    -> KL(q || p) as beta -> 1; in between JSD is bounded and symmetric at 0.5."""
    generator = torch.Generator().manual_seed(1)
    teacher = F.log_softmax(torch.randn(20, V, generator=generator), -1)
    student = F.log_softmax(torch.randn(20, V, generator=generator), -1)
    forward = divergence(teacher, student, "forward_kl")
    reverse = divergence(teacher, student, "reverse_kl")
    small = 1e-4
    torch.testing.assert_close(
        divergence(teacher, student, "jsd", small) / small, forward, rtol=1e-2, atol=0
    )
    torch.testing.assert_close(
        divergence(teacher, student, "jsd", 1 - small) / small, reverse, rtol=1e-2, atol=0
    )
    half = divergence(teacher, student, "jsd", 0.5)
    torch.testing.assert_close(half, divergence(student, teacher, "jsd", 0.5))
    assert (half > 0).all() and (half <= torch.log(torch.tensor(2.0))).all()


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_float32_results(batch: dict, kind, dtype) -> None:
    """The loss of half-precision logits is the float32 loss of the same values: the softmax
    runs in float32 (in half precision it would be off in the third digit)."""
    teacher = batch["teacher"].to(dtype)
    logits = student_logits(batch).detach().to(dtype)
    signal = top_k_signal(teacher, batch["mask"], k=5)
    for used in (teacher, signal):
        low = lm_loss(logits, batch["mask"], used, batch["labels"], kind=kind, **OPTIONS)
        high_teacher = used.float() if isinstance(used, torch.Tensor) else used
        high = lm_loss(
            logits.float(), batch["mask"], high_teacher, batch["labels"], kind=kind, **OPTIONS
        )
        assert low.total.dtype == torch.float32
        torch.testing.assert_close(low.total, high.total, rtol=1e-6, atol=1e-6)
    hidden, weight = batch["hidden"].to(dtype), batch["weight"].to(dtype)
    via_hidden = loss_from_hidden(
        hidden, weight, batch["mask"], signal, batch["labels"], kind=kind, **OPTIONS
    )
    via_logits = lm_loss(
        hidden @ weight.T, batch["mask"], signal, batch["labels"], kind=kind, **OPTIONS
    )
    assert via_hidden.total.dtype == torch.float32
    torch.testing.assert_close(via_hidden.total, via_logits.total, rtol=1e-6, atol=1e-6)


def test_stored_temperature_is_exact_among_the_k_tokens() -> None:
    """Tempering the stored log-probs keeps the k tokens' ratios exactly those of the tempered
    logits; only the rest bucket is approximated."""
    from worker.engine.lm.losses import tempered_teacher_buckets

    generator = torch.Generator().manual_seed(2)
    teacher = 3 * torch.randn(1, 4, V, generator=generator)
    mask = torch.ones(1, 4, dtype=torch.bool)
    signal = top_k_signal(teacher, mask, k=6)
    tempered = tempered_teacher_buckets(signal, 3.0)
    exact = F.log_softmax(teacher[0] / 3.0, -1).gather(-1, signal.ids)
    ratios = tempered[:, :6] - tempered[:, :1]
    torch.testing.assert_close(ratios, exact - exact[:, :1])
    torch.testing.assert_close(tempered.exp().sum(-1), torch.ones(4))


@pytest.mark.parametrize(
    "counts",
    [
        [4, 2, 1, 1, 0],  # 8 draws, no head; the last entry is padding
        [0, 2, 1, 1, 0],  # token 0 the head (count 0), 4 draws over the rest's mass of 0.5
    ],
)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_draws_in_the_teacher_proportions_give_the_dense_forward_kl_exactly(
    counts: list[int], temperature: float
) -> None:
    """Counts exactly proportional to the teacher's probabilities (of the rest, beside a head)
    are the teacher: the sampled loss is then the dense one, value and gradient, at any T."""
    teacher = torch.tensor([0.5, 0.25, 0.125, 0.125]).log()
    mask = torch.ones(1, 1, dtype=torch.bool)
    signal = TopKSignal(
        torch.tensor([[0, 1, 2, 3, 0]]),
        torch.cat([teacher, torch.tensor([float("-inf")])])[None],
        torch.zeros(1),
        torch.tensor([counts]),
    )
    logits = torch.tensor([[[0.3, -1.0, 2.0, 0.1]]], requires_grad=True)
    sampled = lm_loss(logits, mask, signal, temperature=temperature).total
    dense = lm_loss(logits, mask, teacher[None, None], temperature=temperature).total
    torch.testing.assert_close(sampled, dense)
    (sampled_grad,) = torch.autograd.grad(sampled, logits)
    (dense_grad,) = torch.autograd.grad(dense, logits)
    torch.testing.assert_close(sampled_grad, dense_grad)


def test_the_sampled_forward_kl_is_unbiased_where_top_k_is_not(batch: dict) -> None:
    """Averaged over many stores of k draws, the sampled loss and its gradient are the dense
    teacher's; a top-k store of the same k stays off by far more (its tail is one bucket)."""
    logits = student_logits(batch)
    mask, teacher = batch["mask"], batch["teacher"] / 3  # a flat teacher: much mass in the tail
    dense = lm_loss(logits, mask, teacher).total
    (dense_grad,) = torch.autograd.grad(dense, logits)
    generator = torch.Generator().manual_seed(0)
    values, grads = [], []
    for _ in range(400):
        loss = lm_loss(logits, mask, sampled_signal(teacher, mask, 8, generator)).total
        values.append(loss.detach())
        grads.append(torch.autograd.grad(loss, logits)[0])
    mean_grad = torch.stack(grads).mean(0)
    torch.testing.assert_close(torch.stack(values).mean(), dense.detach(), rtol=0.02, atol=0)
    top_k = lm_loss(logits, mask, top_k_signal(teacher, mask, 8)).total
    (top_k_grad,) = torch.autograd.grad(top_k, logits)
    sampled_error = (mean_grad - dense_grad).norm() / dense_grad.norm()
    top_k_error = (top_k_grad - dense_grad).norm() / dense_grad.norm()
    assert sampled_error < 0.1 < top_k_error


@pytest.mark.parametrize("kind", ["reverse_kl", "jsd"])
def test_other_divergences_read_a_sampled_signal_as_buckets_without_its_padding(
    batch: dict, kind
) -> None:
    """Reverse KL and JSD take the drawn tokens with their exact probabilities and the rest,
    as from top-k: the same loss as a top-k signal naming the same tokens."""
    logits, mask = student_logits(batch), batch["mask"]
    sampled = sampled_signal(batch["teacher"], mask, 6, torch.Generator().manual_seed(1))
    assert not sampled.valid.all()
    loss = lm_loss(logits, mask, sampled, kind=kind).total
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # The same tokens as a top-k-like signal: each padding entry dropped row by row.
    rows = []
    for r in range(sampled.tokens):
        valid = sampled.valid[r]
        one = TopKSignal(
            sampled.ids[r][valid][None], sampled.logprobs[r][valid][None], sampled.tail[r : r + 1]
        )
        row_logits = logits.reshape(-1, V)[mask.reshape(-1)][r : r + 1][None]
        rows.append(lm_loss(row_logits, torch.ones(1, 1, dtype=torch.bool), one, kind=kind).total)
    torch.testing.assert_close(loss, torch.stack(rows).mean())
