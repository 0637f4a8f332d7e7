"""What a model shows besides its logits, for the losses that match layers: hidden states and,
for transformers, attention distributions.

Every model the engine builds or loads with visible layers (mlp, cnn, transformer, Hugging
Face) has ``forward_features(x) -> Features``. Hidden states are channels last, ``(B, ...,
width)``, so one ``nn.Linear`` projects any of them; attention is ``(B, heads, L, L)``, each row
summing to 1.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from worker.engine.errors import ShapeMismatch, UnsupportedInput


@dataclass
class Features:
    logits: torch.Tensor  # (B, K)
    hidden: list[torch.Tensor]  # one per layer, in depth order, channels last
    attentions: list[torch.Tensor] | None = (
        None  # one per layer, (B, heads, L, L); None: no attention
    )
    mask: torch.Tensor | None = None  # (B, L) attention mask for sequences: 1 a token, 0 padding


def has_features(module: object) -> bool:
    return callable(getattr(module, "forward_features", None))


def check_layer_indices(
    field: str, indices: Iterable[int], count: int, who: str = "teacher", *, arch: bool = False
) -> None:
    """The spec's layer indices against the model's depth, the one check the spec cannot make
    without the model (it refuses negative, repeated and unordered indices itself). ``arch``:
    the indices pick a student's layers (``unsupported_arch``), not pairs that a layer loss
    matches (``shape_mismatch``)."""
    for index in indices:
        if not 0 <= index < count:
            message = (
                f"{field} names {who} layer {index}, but the {who} has {count} layers "
                f"(0 to {count - 1})."
            )
            if arch:
                raise UnsupportedInput(message, code="unsupported_arch")
            raise ShapeMismatch(message)
