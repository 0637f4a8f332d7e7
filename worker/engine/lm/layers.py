"""A causal LM's per-layer hidden states, for layer matching (``losses.hidden``).

Layer i is the output of decoder layer i, 0 to num_hidden_layers - 1, as ``student.layers``
numbers a from_teacher student's layers. That is transformers' ``hidden_states[i + 1]``
(index 0 being the embeddings), but for the last layer: the tuple's last entry has passed the
final norm, so a last layer paired with an inner one would compare a normalised state with a
raw one. Forward hooks on the decoder layers record the outputs of the paired layers alone,
during a forward pass the caller runs anyway: the student's for its loss, the teacher's for
its signal.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from worker.engine.features import Features
from worker.engine.layer_losses import Pairs, propose_pairs
from worker.engine.lm.models import layer_prefix

SAMPLE_TOKENS = 8  # the one short row that shows each layer's shape before training


@contextmanager
def recording(model: nn.Module, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Within, a forward pass of ``model`` fills the dict yielded with the outputs of its
    decoder ``layers``, by index."""
    stack = decoder_layers(model)
    states: dict[int, torch.Tensor] = {}

    def keeper(index: int) -> Any:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            # A tensor in transformers 5, a tuple led by it in older versions and some families.
            states[index] = output[0] if isinstance(output, tuple) else output

        return keep

    handles = [stack[i].register_forward_hook(keeper(i)) for i in sorted(set(layers))]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    layers = model.get_submodule(layer_prefix(model).removesuffix("."))
    assert isinstance(layers, nn.ModuleList)
    return layers


def default_pairs(copied_from: list[int] | None, student_layers: int, teacher_layers: int) -> Pairs:
    """Each layer of a from_teacher student with the teacher layer it was copied from
    (``copied_from``, its ``student.layers``); any other student spread evenly over the
    teacher's layers, the last onto the last."""
    if copied_from is not None:
        return list(enumerate(copied_from))
    return propose_pairs(student_layers, teacher_layers)


@torch.no_grad()
def sample_features(model: nn.Module, inputs: dict[str, torch.Tensor | None]) -> Features:
    """Every layer's states on ``inputs`` (one short row): the shapes layer matching checks its
    pairs against and sizes its projections by."""
    depth = len(decoder_layers(model))
    with recording(model, range(depth)) as states:
        logits = model(**inputs).logits
    return Features(logits, [states[i] for i in range(depth)], mask=inputs["attention_mask"])


def base_model(model: nn.Module) -> nn.Module:
    """The transformer under a ``*ForCausalLM``'s head: its forward stops at the final norm."""
    base = getattr(model, str(model.base_model_prefix))
    assert isinstance(base, nn.Module)
    return base
