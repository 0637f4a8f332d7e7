"""How well a causal LM predicts the validation tokens, next to its teacher: perplexity, top-1
agreement with the teacher, KL(teacher || student) at T = 1, and the training loss itself.

The teacher is what training saw: its stored top-k signal (then agreement is with the signal's
first token, and KL is over the k tokens plus the rest, as the loss sees it), or its dense logits
when it is online (``teacher_top_k: 0``). Only the target tokens' logits are ever computed, a chunk
at a time, in float32, and once: the loss and the metrics are read off the same chunk.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from worker.engine.lm.data import LMBatch, LMRows, collate
from worker.engine.lm.losses import (
    divergence,
    lm_loss,
    student_buckets,
    tempered_teacher_buckets,
)
from worker.engine.lm.measure import perplexity
from worker.engine.lm.signal import TopKSignal

# The teacher of a batch of validation rows: its stored signal, or its dense logits.
TeacherOf = Callable[[list[int], LMBatch], TopKSignal | torch.Tensor]
CHUNK = 256  # target tokens whose float32 logits exist at once


@dataclass
class Scores:
    nll: float = 0.0  # summed over target tokens
    agree: int = 0
    kl: float = 0.0
    loss: float = 0.0  # the training loss, summed per batch weighted by its target tokens
    tokens: int = 0

    def metrics(self, prefix: str = "val_") -> dict[str, float | None]:
        n = max(self.tokens, 1)
        return {
            f"{prefix}loss": self.loss / n,
            f"{prefix}perplexity": perplexity(self.nll, self.tokens),
            f"{prefix}token_agreement": self.agree / n,
            f"{prefix}kl": self.kl / n,
        }


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    hidden_of: Callable[[torch.nn.Module, LMBatch], torch.Tensor],
    head: tuple[torch.Tensor, torch.Tensor | None],
    rows: LMRows,
    teacher_of: TeacherOf | None,
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    kind: str,
    beta: float,
    temperature: float,
    alpha: float,
) -> Scores:
    """``model``'s scores on every row of ``rows``, in order. ``hidden_of`` gives the model's last
    hidden states and ``head`` its LM head (weight, bias) cut to the tokenizer's vocabulary."""
    was_training = model.training
    model.eval()
    scores = Scores()
    # float32, as the loss takes them; a no-op for a float32 model
    weight = head[0].float()
    bias = None if head[1] is None else head[1].float()
    for start in range(0, len(rows), batch_size):
        indices = list(range(start, min(start + batch_size, len(rows))))
        batch = collate(rows, indices, pad_id, device)
        teacher = teacher_of(indices, batch) if teacher_of is not None else None
        hidden = hidden_of(model, batch)
        mask = batch.target_mask.reshape(-1)
        n = int(mask.sum())
        if n == 0:
            continue
        targets = hidden.reshape(-1, hidden.shape[-1])[mask]
        labels = batch.labels.reshape(-1)[mask]
        dense = None
        if isinstance(teacher, torch.Tensor):
            dense = teacher.reshape(-1, teacher.shape[-1])[mask]
        scores_loss = teacher is not None or alpha < 1
        for a in range(0, n, CHUNK):
            # One LM head per chunk: the loss and the metrics are read off the same logits.
            logits = F.linear(targets[a : a + CHUNK].float(), weight, bias)
            chunk_labels = labels[a : a + CHUNK]
            nll = float(F.cross_entropy(logits, chunk_labels, reduction="sum"))
            scores.nll += nll
            part: TopKSignal | torch.Tensor | None = None
            logps: tuple[torch.Tensor, torch.Tensor] | None = None  # teacher's, student's at T=1
            if isinstance(teacher, TopKSignal):
                part = teacher.slice(a, a + CHUNK)
                # The teacher's most likely stored token (a sampled signal keeps id order).
                top1 = part.ids.gather(-1, part.logprobs.argmax(-1, keepdim=True))[:, 0]
                logps = (
                    tempered_teacher_buckets(part, 1.0),
                    student_buckets(logits, part.ids, 1.0, part.valid),
                )
            elif dense is not None:
                part = dense[a : a + CHUNK].float()
                top1 = part.argmax(-1)
                logps = part.log_softmax(-1), logits.log_softmax(-1)
            if logps is not None:
                scores.kl += float(divergence(*logps, "forward_kl", 0.5).sum())
                scores.agree += int((logits.argmax(-1) == top1).sum())
            if not scores_loss:
                continue
            # (a sampled signal's forward KL is not its buckets' but an estimate from its draws)
            drawn = isinstance(part, TopKSignal) and part.counts is not None
            if temperature == 1.0 and (alpha == 0 or (logps is not None and not drawn)):
                # At T = 1 the loss is read off the metrics' own distributions: its CE is the
                # NLL, its divergence is between the same buckets (a full-vocabulary pass saved).
                kd = (
                    0.0
                    if logps is None or alpha == 0
                    else float(divergence(*logps, kind, beta).sum())  # type: ignore[arg-type]
                )
                scores.loss += alpha * kd + (1 - alpha) * nll
            else:
                loss = lm_loss(
                    logits[None],
                    torch.ones((1, logits.shape[0]), dtype=torch.bool, device=logits.device),
                    part if alpha > 0 else None,
                    chunk_labels[None] if alpha < 1 else None,
                    kind=kind,  # type: ignore[arg-type]
                    beta=beta,
                    temperature=temperature,
                    alpha=alpha,
                    chunk_size=CHUNK,
                )
                scores.loss += float(loss.total) * logits.shape[0]
        scores.tokens += n
    model.train(was_training)
    return scores
