"""Rows and batches of language-model documents: documents (``data.LMExample``) laid out in rows
of at most ``max_length`` tokens, one per row or packed, and rows collated into the batches a
causal LM takes.

A packed batch's attention mask is 4-D, (batch, 1, L, L), additive float32: 0 where a token may
attend, float32's minimum where it may not. transformers (``masking_utils``) passes a 4-D mask to
the attention as it is: ``eager`` adds it to the scores (a boolean mask would be added as 0/1 and
silently let documents see each other) and ``sdpa`` takes float32 masks whatever the model's
dtype. Each token attends to the earlier tokens of its own document; padding attends to earlier
padding only, so every row of the mask lets some key through (a row masked whole is NaN with
-inf, and attends to everything alike with a finite minimum). Positions restart at each
document, which models with absolute positions (GPT-2) need.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from worker.engine.errors import ShapeMismatch, UnsupportedInput

if TYPE_CHECKING:
    from worker.engine.lm.data import LMExample

PACKING_ATTENTION = ("sdpa", "eager")  # the implementations that take the 4-D mask as it is


@dataclass
class LMRows:
    """What the model is fed: rows of at most max_length tokens. With packing, ``position_ids``
    restart at 0 at each document and ``documents`` numbers the row's documents, per token."""

    input_ids: list[torch.Tensor]  # int64 (L_i,)
    target_mask: list[torch.Tensor]  # bool (L_i,)
    position_ids: list[torch.Tensor] | None = None
    documents: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_tokens(self) -> int:
        return sum(int(mask.sum()) for mask in self.target_mask)

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids in self.input_ids)


def to_rows(examples: Sequence["LMExample"], max_length: int, packing: bool) -> LMRows:
    """One example per row, or (``packing``) whole documents laid greedily, in order, into rows of
    up to ``max_length`` tokens: a document is never split across rows."""
    if not packing:
        return LMRows(
            [torch.tensor(e.input_ids, dtype=torch.long) for e in examples],
            [torch.tensor(e.target_mask, dtype=torch.bool) for e in examples],
        )
    groups: list[list[LMExample]] = []
    length = max_length
    for example in examples:
        if len(example.input_ids) > max_length:
            raise ShapeMismatch(
                f"A document of {len(example.input_ids)} tokens does not fit rows of {max_length}."
            )
        if length + len(example.input_ids) > max_length:
            groups.append([])
            length = 0
        groups[-1].append(example)
        length += len(example.input_ids)
    return LMRows(
        [torch.tensor([t for e in g for t in e.input_ids], dtype=torch.long) for g in groups],
        [torch.tensor([m for e in g for m in e.target_mask], dtype=torch.bool) for g in groups],
        [torch.cat([torch.arange(len(e.input_ids)) for e in g]) for g in groups],
        [torch.cat([torch.full((len(e.input_ids),), d) for d, e in enumerate(g)]) for g in groups],
    )


@dataclass
class LMBatch:
    input_ids: torch.Tensor  # (B, L) right-padded with the pad id to the batch's longest row
    attention_mask: torch.Tensor  # (B, L) 1/0; packed: (B, 1, L, L) additive (module docstring)
    position_ids: torch.Tensor | None  # packed only
    target_mask: torch.Tensor  # (B, L) bool
    labels: torch.Tensor  # (B, L) int64: at t the token t + 1, 0 where t is not a target
    token_mask: torch.Tensor  # (B, L) bool: a token of the row, not padding


def collate(
    rows: LMRows, indices: Sequence[int], pad_id: int, device: torch.device | str | None = None
) -> LMBatch:
    length = max(len(rows.input_ids[i]) for i in indices)

    def pad(tensors: list[torch.Tensor] | None, value: int) -> torch.Tensor | None:
        if tensors is None:
            return None
        out = torch.full((len(indices), length), value, dtype=tensors[indices[0]].dtype)
        for b, i in enumerate(indices):
            out[b, : len(tensors[i])] = tensors[i]
        return out.to(device)

    input_ids, target_mask = pad(rows.input_ids, pad_id), pad(rows.target_mask, False)
    assert input_ids is not None and target_mask is not None
    labels = torch.zeros_like(input_ids)
    labels[:, :-1] = input_ids[:, 1:]
    labels.masked_fill_(~target_mask, 0)
    lengths = torch.tensor([len(rows.input_ids[i]) for i in indices], device=device)
    token_mask = torch.arange(length, device=device) < lengths[:, None]
    documents = pad(rows.documents, -1)  # padding: a document of its own
    attention_mask = token_mask.long() if documents is None else _block_causal(documents)
    position_ids = pad(rows.position_ids, 0)
    return LMBatch(input_ids, attention_mask, position_ids, target_mask, labels, token_mask)


def _block_causal(documents: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) additive float32: 0 where query q may see key k (k <= q, same document)."""
    length = documents.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=documents.device).tril()
    allowed = (documents[:, :, None] == documents[:, None, :]) & causal
    blocked = torch.zeros(allowed.shape, device=documents.device)
    return blocked.masked_fill_(~allowed, torch.finfo(torch.float32).min)[:, None]


def model_inputs(batch: LMBatch) -> dict[str, torch.Tensor | None]:
    """The keyword arguments of ``model(**...)``."""
    return {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
    }


def check_packing(model: Any, max_length: int) -> None:
    """Refuse a model whose attention would not keep packed documents apart: one whose attention
    implementation does not take the 4-D mask as it is, or whose sliding window (which a 4-D mask
    replaces) is shorter than a row."""
    config = model.config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in PACKING_ATTENTION:
        raise UnsupportedInput(
            f"Packing needs sdpa or eager attention; this model uses {implementation}. "
            "Set data.packing to false.",
            code="packing_unsupported",
        )
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or ["sliding_attention"])
    if isinstance(window, int) and sliding and window < max_length:
        raise UnsupportedInput(
            f"Packing rows of {max_length} tokens would lose this model's sliding window of "
            f"{window}; set data.packing to false or data.max_length to {window} or less.",
            code="packing_unsupported",
        )
