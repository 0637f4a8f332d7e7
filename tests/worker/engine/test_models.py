import pytest
import torch

from worker.engine import ShapeMismatch, UnsupportedInput, build_model

# TorchScript is deprecated in torch 2.x; the contract still promises it (student.pt).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

MLP = {"arch": "mlp", "hidden_sizes": [16, 8], "activation": "gelu", "dropout": 0.1}
CNN = {"arch": "cnn", "channels": [4, 8], "kernel_size": 3, "hidden_sizes": [16]}


@pytest.mark.parametrize(
    ("arch", "input_shape"),
    [
        (MLP, (64,)),
        (MLP, (1, 8, 8)),  # an mlp flattens images
        (CNN, (1, 8, 8)),
        (CNN | {"channels": [2, 2, 2, 2], "kernel_size": 2}, (3, 5, 7)),  # pooling stops at 1x1
        ({"arch": "mlp", "hidden_sizes": [], "activation": "silu"}, (5,)),  # logistic regression
    ],
)
def test_models_give_logits_and_script(arch: dict, input_shape: tuple[int, ...]) -> None:
    model = build_model(arch, input_shape, num_outputs=3).eval()
    x = torch.randn(4, *input_shape)

    logits = model(x)

    assert logits.shape == (4, 3)
    torch.testing.assert_close(torch.jit.script(model)(x), logits)


def test_every_model_ends_in_an_out_layer() -> None:
    """load_teacher reads the class count from ``out.weight``."""
    for arch, shape in ((MLP, (64,)), (CNN, (1, 8, 8))):
        weights = build_model(arch, shape, 7).state_dict()
        assert weights["out.weight"].shape[0] == 7


def test_cnn_refuses_flat_data() -> None:
    with pytest.raises(ShapeMismatch, match=r"\(N, C, H, W\)"):
        build_model(CNN, (64,), 10)


def test_unknown_arch_is_unsupported() -> None:
    with pytest.raises(UnsupportedInput) as info:
        build_model({"arch": "transformer"}, (64,), 10)
    assert info.value.code == "unsupported_arch"
