"""The per-layer hidden states layer matching reads (worker/engine/lm/layers.py): layer i is
decoder layer i's own output, recorded during a forward pass the caller runs anyway, in every
family; and the default pairs."""

import pytest
import torch

from tests.worker.engine.lm.conftest import tiny_causal_lm
from worker.engine.lm.layers import base_model, default_pairs, recording


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_layer_i_is_transformers_hidden_state_i_plus_one_before_the_final_norm(
    family: str,
) -> None:
    model = tiny_causal_lm(family)
    ids = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), recording(model, [0, 1, 2, 3]) as states:
        out = model(input_ids=ids, output_hidden_states=True)
    expected = out.hidden_states
    assert sorted(states) == [0, 1, 2, 3] and len(expected) == 5  # the embeddings first
    for i in range(3):
        torch.testing.assert_close(states[i], expected[i + 1])
    # The tuple's last entry has passed the final norm; the recorded last layer has not.
    final_norm = model.model.norm if family != "gpt2" else model.transformer.ln_f
    torch.testing.assert_close(final_norm(states[3]), expected[4])
    assert not torch.allclose(states[3], expected[4])


def test_only_the_layers_asked_for_are_kept_and_the_hooks_go() -> None:
    model = tiny_causal_lm("llama")
    ids = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), recording(model, [2, 0]) as states:
        base_model(model)(input_ids=ids)  # no LM head: the teacher's pass beside a stored signal
    assert sorted(states) == [0, 2]
    with torch.no_grad():
        model(input_ids=ids)
    assert sorted(states) == [0, 2]  # nothing recorded after the block
    assert all(not layer._forward_hooks for layer in model.model.layers)


def test_gradients_reach_the_student_through_its_recorded_layers() -> None:
    model = tiny_causal_lm("qwen2").train()
    ids = torch.randint(0, 96, (1, 5), generator=torch.Generator().manual_seed(2))
    with recording(model, [1]) as states:
        base_model(model)(input_ids=ids)
    states[1].pow(2).mean().backward()
    assert model.model.layers[1].mlp.down_proj.weight.grad is not None
    assert model.model.layers[2].mlp.down_proj.weight.grad is None  # after the layer


def test_default_pairs() -> None:
    assert default_pairs([0, 2, 5], 3, 6) == [(0, 0), (1, 2), (2, 5)]  # where each was copied from
    assert default_pairs(None, 2, 6) == [(0, 2), (1, 5)]  # spread, the last onto the last
