"""Distillation losses for causal LMs, over a vocabulary too large to hold whole.

``kd = T^2 * mean over target tokens of D(teacher || student)`` at temperature T, and
``total = alpha * kd + (1 - alpha) * CE`` with CE on the target tokens at T = 1, as the
classifier losses (``worker.engine.losses``) do. D is one of:

- ``forward_kl``: KL(p || q), the teacher's distribution p against the student's q (the default);
- ``reverse_kl``: KL(q || p), mode-seeking (MiniLLM);
- ``jsd``: GKD's generalised Jensen-Shannon divergence with ``beta``:
  ``beta * KL(p || m) + (1 - beta) * KL(q || m)`` with ``m = beta * p + (1 - beta) * q``.
  It vanishes at both ends of beta; divided by beta it tends to forward KL as beta -> 0, and
  divided by (1 - beta) to reverse KL as beta -> 1. As in GKD (and TRL), ``beta = 0`` *is*
  forward KL and ``beta = 1`` reverse KL.

The teacher is either its dense logits (``teacher_top_k: 0``, the teacher online) or a stored
top-k signal (``signal.TopKSignal``). Against the signal both sides become (k+1)-bucket
distributions: the teacher's k tokens plus one "rest" bucket holding the mass outside them; the
student's rest bucket is the mass it puts on every other token, exactly (a log-sum-exp over the
vocabulary with the k ids masked out), so pushing mass off the teacher's tokens is penalised.

A sampled signal (``signal.sampled_signal``: n draws with their counts, and optionally a head of
tokens kept exactly, the draws then from the rest) is read differently by forward KL:
``w_j = p_j`` on the head and ``w_j = rest * c_j / n`` on the drawn tokens (``rest`` the mass
outside the head; 1 without a head) estimate the teacher's whole distribution without bias, so
``sum_j w_j (log p_j - log q_j)``, with the student's log-probabilities q over the whole
vocabulary, is an unbiased estimate of KL(p || q) and its gradient of the dense one, tail
included ("Sparse Logit Sampling", Anshumann et al., ACL 2025). At T != 1 the weights (made at
T = 1) are moved to the tempered teacher by self-normalised importance sampling,
``w_j * p_j^(1/T - 1)``, which is consistent but no longer unbiased for a finite n. Reverse KL
and JSD need the teacher's probability of the student's tokens, which draws cannot give; they
read a sampled signal as buckets, as a top-k one (the drawn tokens with their exact
log-probabilities, and the rest).

Temperature on a top-k signal is an approximation: the teacher's logits are gone, so we temper
the k+1 buckets, ``softmax([log p_1 .. log p_k, log rest] / T)``. For the k tokens this is exact
(the ratios between them are the logits' ratios); the rest bucket is treated as if it were one
token of log-probability ``log rest``, whereas the true tempered rest mass is the sum of its many
tokens' tempered masses. At T > 1 the tempered rest is therefore too small (a flatter teacher
spreads more mass over the tail than one bucket suggests), at T < 1 too large. At T = 1 the only
approximations are the stored precision and the tail's lumping into one bucket.

Every loss is computed in float32 whatever the inputs' dtype, over only the masked target tokens,
and in chunks of ``chunk_size`` positions of the flattened (batch x length) sequence, each chunk
under activation checkpointing: no (batch x length x vocab) float32 tensor exists beyond one
chunk, in the forward pass or the backward. ``loss_from_hidden`` takes the student's last hidden
states and its LM head instead of logits, so the student's full logits never exist at all.

Masks and labels are aligned with the logits: ``target_mask[b, t]`` says whether the logits at
position t (which predict token t + 1) are trained, and ``labels[b, t]`` is that next token.
The shift is the caller's.
"""

import functools
import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from worker.engine.lm.signal import TopKSignal
from worker.engine.losses import LossTerms

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
DIVERGENCES: tuple[Divergence, ...] = ("forward_kl", "reverse_kl", "jsd")
DEFAULT_CHUNK_SIZE = 128  # positions; at vocabulary 49,152 a float32 chunk is 24 MiB
Teacher = TopKSignal | torch.Tensor | None
_MASKED = -1e30  # exp() of it is 0 in float32, yet it stays finite
_TINY = torch.finfo(torch.float32).tiny
_LOG_TINY = math.log(_TINY)


def divergence(
    teacher_log_probs: torch.Tensor,
    student_log_probs: torch.Tensor,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """D(teacher || student) per row, from two normalised log-distributions over the same
    buckets (the last dimension). Buckets of zero probability contribute nothing."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        return _kl(teacher_log_probs, student_log_probs)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        return _kl(student_log_probs, teacher_log_probs)
    if kind != "jsd":
        raise ValueError(f"unknown divergence {kind!r}; expected one of {DIVERGENCES}")
    if not 0 < beta < 1:
        raise ValueError(f"jsd needs 0 <= beta <= 1, got {beta}")
    mixture = torch.logaddexp(
        teacher_log_probs + math.log(beta), student_log_probs + math.log1p(-beta)
    )
    return beta * _kl(teacher_log_probs, mixture) + (1 - beta) * _kl(student_log_probs, mixture)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row; ``0 * log 0`` is 0 (a bucket p never visits costs nothing, even
    where q is 0 too), so ``-inf`` log-probabilities are safe on either side."""
    p = log_p.exp()
    seen = p > 0
    # Zero the unseen buckets' logs before the product, not after: ``where`` alone would still
    # send 0 * nan (from -inf - -inf) back through the gradient.
    zero = torch.zeros_like(p)
    terms = p * (torch.where(seen, log_p, zero) - torch.where(seen, log_q, zero))
    return terms.sum(-1)


def tempered_teacher_buckets(signal: TopKSignal, temperature: float) -> torch.Tensor:
    """The stored signal as a (n, k+1) log-distribution at temperature T: the k log-probs and
    the log of the rest mass, divided by T and renormalised (the module's docstring says what
    this approximates). Renormalising also absorbs the stored half-precision rounding."""
    # A tail that underflowed to 0 is floored at the smallest normal float: the student's rest
    # bucket is never exactly 0, and reverse KL against a zero would be infinite.
    tail = signal.tail.float().clamp_min(_TINY)
    buckets = torch.cat([signal.logprobs.float(), tail.log().unsqueeze(-1)], dim=-1)
    return F.log_softmax(buckets / temperature, dim=-1)


def student_buckets(
    logits: torch.Tensor,
    ids: torch.Tensor,
    temperature: float,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The student's (n, k+1) log-distribution at T over the teacher's k ids and the rest:
    the rest bucket is the log-sum-exp of every other token, not ``1 - sum``, so it keeps its
    precision (and its gradient) when small. ``valid`` (n, k) marks the ids that name a token
    (a sampled signal's padding repeats its row's first id); the others get no mass."""
    scaled = logits.float() / temperature
    log_norm = scaled.logsumexp(-1, keepdim=True)
    top = scaled.gather(-1, ids) - log_norm
    if valid is not None:
        top = torch.where(valid, top, _MASKED)
    # Masked with a finite floor, not -inf: with every token among the k (k = vocabulary) the
    # log-sum-exp of nothing but -inf has a nan gradient.
    rest = scaled.scatter(-1, ids, _MASKED).logsumexp(-1, keepdim=True) - log_norm
    # Floored as the teacher's tail is, so that a rest bucket empty on both sides costs ~0.
    rest = rest.clamp_min(_LOG_TINY)
    return torch.cat([top, rest], dim=-1)


def sampled_log_weights(signal: TopKSignal) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampled signal's estimate of the teacher's distribution over its stored tokens, at
    T = 1, as (log weights, log-probabilities), both (n, k): the head's probabilities, and the
    rest's mass shared among the drawn tokens by their counts; -inf weight on padding, whose
    log-probabilities are zeroed (so that products with them stay finite)."""
    if signal.counts is None:
        raise ValueError("a top-k signal has no draws; read it as buckets")
    valid = torch.isfinite(signal.logprobs)
    drawn = signal.counts > 0
    head = valid & ~drawn
    counts = signal.counts.float()
    log_p = torch.where(valid, signal.logprobs.float(), 0.0)
    head_mass = torch.where(head, log_p.exp(), 0.0).sum(-1, keepdim=True)
    log_rest = torch.log1p(-head_mass.clamp(max=1 - 2**-24))
    log_share = (
        log_rest + counts.clamp_min(1).log() - counts.sum(-1, keepdim=True).clamp_min(1).log()
    )
    log_weight = torch.where(head, log_p, torch.where(drawn, log_share, float("-inf")))
    return log_weight, log_p


def sampled_forward_kl(
    student_logits: torch.Tensor, signal: TopKSignal, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) per row at T, estimated from a sampled signal (the module's
    docstring says how): the student's log-probabilities are over the whole vocabulary, the
    teacher's weights (``sampled_log_weights``) over the stored tokens only."""
    log_weight, log_p = sampled_log_weights(signal)
    # At T = 1 the weights are the estimated distribution (they sum to 1); at T != 1 they are
    # reweighted by p^(1/T - 1), and their sum estimates Z_T, the tempered teacher's normaliser.
    log_weight = log_weight + (1 / temperature - 1) * log_p
    log_z = log_weight.logsumexp(-1, keepdim=True)
    weight = (log_weight - log_z).exp()  # 0 on padding
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, signal.ids)
    valid = torch.isfinite(signal.logprobs)
    terms = weight * (log_p / temperature - log_z - torch.where(valid, log_q, 0.0))
    return terms.sum(-1)


def lm_loss(
    student_logits: torch.Tensor,
    target_mask: torch.Tensor,
    teacher: Teacher = None,
    labels: torch.Tensor | None = None,
    *,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    alpha: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LossTerms:
    """The loss from the student's logits (batch, length, vocab), in any dtype. ``teacher`` is
    dense logits of the same shape or the stored signal of exactly the masked tokens, in
    row-major order; it may be None at alpha 0, as ``labels`` may at alpha 1."""
    vocab = student_logits.shape[-1]
    flat = student_logits.reshape(-1, vocab)
    return _chunked_loss(
        lambda start, end, rows: flat[start:end][rows],
        (flat,),
        target_mask,
        teacher,
        labels,
        kind,
        beta,
        temperature,
        alpha,
        chunk_size,
    )


def loss_from_hidden(
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
    target_mask: torch.Tensor,
    teacher: Teacher = None,
    labels: torch.Tensor | None = None,
    *,
    lm_head_bias: torch.Tensor | None = None,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    alpha: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LossTerms:
    """``lm_loss`` from the student's last hidden states (batch, length, hidden) and its LM head
    (vocab, hidden): each chunk's logits are computed for its target tokens only, in the
    inputs' dtype as the LM head itself would (so this equals ``lm_loss`` on the model's own
    logits), then taken to float32; gradients reach the hidden states and the head."""
    flat = hidden.reshape(-1, hidden.shape[-1])

    def logits(start: int, end: int, rows: torch.Tensor) -> torch.Tensor:
        return F.linear(flat[start:end][rows], lm_head_weight, lm_head_bias)

    inputs = tuple(t for t in (flat, lm_head_weight, lm_head_bias) if t is not None)
    return _chunked_loss(
        logits, inputs, target_mask, teacher, labels, kind, beta, temperature, alpha, chunk_size
    )


def _chunked_loss(
    chunk_logits: Callable[[int, int, torch.Tensor], torch.Tensor],
    student_inputs: tuple[torch.Tensor, ...],
    target_mask: torch.Tensor,
    teacher: Teacher,
    labels: torch.Tensor | None,
    kind: Divergence,
    beta: float,
    temperature: float,
    alpha: float,
    chunk_size: int,
) -> LossTerms:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    use_kd, use_ce = alpha > 0, alpha < 1
    if use_kd and teacher is None:
        raise ValueError("alpha > 0 needs the teacher (its logits or its stored signal)")
    if use_ce and labels is None:
        raise ValueError("alpha < 1 needs labels")
    mask = target_mask.reshape(-1).bool()
    count = int(mask.sum())
    if isinstance(teacher, TopKSignal) and use_kd and teacher.tokens != count:
        raise ValueError(f"the stored signal has {teacher.tokens} tokens, the mask {count}")
    dense = teacher.reshape(-1, teacher.shape[-1]) if isinstance(teacher, torch.Tensor) else None
    flat_labels = labels.reshape(-1) if labels is not None and use_ce else None
    if not use_kd:
        dense = None

    kd_sum = ce_sum = torch.zeros((), dtype=torch.float32, device=mask.device)
    taken = 0  # target tokens before this chunk: where its stored signal starts
    for start in range(0, mask.numel(), chunk_size):
        end = min(start + chunk_size, mask.numel())
        rows = mask[start:end]
        n = int(rows.sum())
        if n == 0:
            continue

        if dense is not None:
            part: TopKSignal | torch.Tensor | None = dense[start:end][rows].detach()
        elif isinstance(teacher, TopKSignal) and use_kd:
            part = teacher.slice(taken, taken + n)
        else:
            part = None
        targets = flat_labels[start:end][rows] if flat_labels is not None else None
        # Bound now: the backward pass recomputes the chunk after the loop has moved on.
        chunk = functools.partial(
            _chunk_terms,
            functools.partial(chunk_logits, start, end, rows),
            part,
            targets,
            kind,
            beta,
            temperature,
        )
        if torch.is_grad_enabled() and any(t.requires_grad for t in student_inputs):
            # Recompute the chunk in the backward pass rather than keep its float32 logits.
            kd, ce = checkpoint(chunk, use_reentrant=False)
        else:
            kd, ce = chunk()
        kd_sum, ce_sum = kd_sum + kd, ce_sum + ce
        taken += n
    return _combine(kd_sum, ce_sum, max(count, 1), use_kd, use_ce, temperature, alpha)


def _chunk_terms(
    student_logits: Callable[[], torch.Tensor],
    teacher: TopKSignal | torch.Tensor | None,
    labels: torch.Tensor | None,
    kind: Divergence,
    beta: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed KD divergence and CE of one chunk's target tokens (zero where unused)."""
    student = student_logits().float()
    kd = ce = torch.zeros((), dtype=torch.float32, device=student.device)
    forward = kind == "forward_kl" or (kind == "jsd" and beta == 0)
    if isinstance(teacher, TopKSignal) and teacher.counts is not None and forward:
        kd = sampled_forward_kl(student, teacher, temperature).sum()
    elif isinstance(teacher, TopKSignal):
        t_logp = tempered_teacher_buckets(teacher, temperature)
        s_logp = student_buckets(student, teacher.ids, temperature, teacher.valid)
        kd = divergence(t_logp, s_logp, kind, beta).sum()
    elif teacher is not None:
        t_logp = F.log_softmax(teacher.float() / temperature, -1)
        kd = divergence(t_logp, F.log_softmax(student / temperature, -1), kind, beta).sum()
    if labels is not None:
        ce = F.cross_entropy(student, labels, reduction="sum")
    return kd, ce


def _combine(
    kd_sum: torch.Tensor,
    ce_sum: torch.Tensor,
    count: int,
    use_kd: bool,
    use_ce: bool,
    temperature: float,
    alpha: float,
) -> LossTerms:
    kd = kd_sum / count * temperature**2 if use_kd else None
    ce = ce_sum / count if use_ce else None
    if kd is None:
        assert ce is not None
        return LossTerms(ce, None, ce)
    total = kd if ce is None else alpha * kd + (1 - alpha) * ce
    return LossTerms(total, kd, ce)
