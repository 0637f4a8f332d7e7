"""Validation scores of a causal LM: computed a chunk of target tokens at a time, from one LM head
per chunk (and, at T = 1, the loss from the metrics' own distributions), they equal the same
figures computed from each batch's whole logits at once, the loss by ``lm_loss``."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.worker.engine.lm.conftest import tiny_causal_lm
from worker.engine.lm import evaluation
from worker.engine.lm.losses import (
    divergence,
    lm_loss,
    student_buckets,
    tempered_teacher_buckets,
)
from worker.engine.lm.rows import LMBatch, LMRows, collate, model_inputs
from worker.engine.lm.signal import sampled_signal, top_k_signal

V, ROWS, BATCH = 96, 7, 3


@pytest.fixture
def rows() -> LMRows:
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 11, 8, 3, 12, 9, 6]
    ids = [torch.randint(0, V, (n,), generator=generator) for n in lengths]
    masks = [torch.rand(n, generator=generator) > 0.3 for n in lengths]
    for mask in masks:
        mask[0], mask[-1] = True, False  # a target in each row; the last position has none
    return LMRows(ids, masks)


def hidden_of(model: torch.nn.Module, batch: LMBatch) -> torch.Tensor:
    return model.model(**model_inputs(batch)).last_hidden_state


def teacher_logits(rows: LMRows) -> torch.Tensor:
    """A dense teacher: seeded logits per row, padded to the longest row."""
    generator = torch.Generator().manual_seed(1)
    return 3 * torch.randn(len(rows), max(len(r) for r in rows.input_ids), V, generator=generator)


def reference(model, rows: LMRows, teacher_of, alpha: float, kind, beta, temperature) -> dict:
    """The scores from each batch's whole logits, one loss per batch."""
    nll = kl = loss = 0.0
    agree = tokens = 0
    with torch.no_grad():
        for start in range(0, len(rows), BATCH):
            indices = list(range(start, min(start + BATCH, len(rows))))
            batch = collate(rows, indices, 0)
            logits = model(**model_inputs(batch)).logits
            teacher = teacher_of(indices, batch)
            mask = batch.target_mask
            n = int(mask.sum())
            terms = lm_loss(
                logits,
                mask,
                teacher,
                batch.labels,
                kind=kind,
                beta=beta,
                temperature=temperature,
                alpha=alpha,
            )
            loss += float(terms.total) * n
            selected, labels = logits[mask], batch.labels[mask]
            nll += float(F.cross_entropy(selected, labels, reduction="sum"))
            if isinstance(teacher, torch.Tensor):
                dense = teacher[mask]
                top1 = dense.argmax(-1)
                t_logp, s_logp = dense.log_softmax(-1), selected.log_softmax(-1)
            else:
                # the most likely stored token: a sampled signal keeps its tokens in id order
                top1 = teacher.ids.gather(-1, teacher.logprobs.argmax(-1, keepdim=True))[:, 0]
                t_logp = tempered_teacher_buckets(teacher, 1.0)
                s_logp = student_buckets(selected, teacher.ids, 1.0, teacher.valid)
            kl += float(divergence(t_logp, s_logp, "forward_kl").sum())
            agree += int((selected.argmax(-1) == top1).sum())
            tokens += n
    return {
        "val_loss": loss / tokens,
        "val_perplexity": math.exp(nll / tokens),
        "val_token_agreement": agree / tokens,
        "val_kl": kl / tokens,
    }


@pytest.mark.parametrize("teacher_kind", ["signal", "sampled", "dense"])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_chunked_scores_equal_the_whole_batchs(
    rows: LMRows,
    teacher_kind: str,
    alpha: float,
    temperature: float,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(evaluation, "CHUNK", 4)  # several chunks a batch, some rows split
    model = tiny_causal_lm("llama").train()
    dense = teacher_logits(rows)

    def teacher_of(indices: list[int], batch: LMBatch):
        logits = dense[indices, : batch.input_ids.shape[1]]
        if teacher_kind == "sampled":  # the same draws for the same rows, on every call
            generator = torch.Generator().manual_seed(indices[0])
            return sampled_signal(logits, batch.target_mask, 8, generator)
        return logits if teacher_kind == "dense" else top_k_signal(logits, batch.target_mask, 8)

    options = {"kind": kind, "beta": 0.3, "temperature": temperature, "alpha": alpha}
    scores = evaluation.evaluate(
        model,
        hidden_of,
        (model.lm_head.weight, None),
        rows,
        teacher_of,
        pad_id=0,
        batch_size=BATCH,
        device=torch.device("cpu"),
        **options,  # type: ignore[arg-type]
    )
    assert model.training  # handed back as it came
    expected = reference(model, rows, teacher_of, **options)  # type: ignore[arg-type]
    assert scores.tokens == sum(int(m.sum()) for m in rows.target_mask)
    assert scores.metrics() == pytest.approx(expected, rel=1e-5)
