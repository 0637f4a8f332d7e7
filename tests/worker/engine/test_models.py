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
        (CNN, (40,)),  # a bare signal, one channel
        (CNN | {"activation": "tanh", "dropout": 0.1}, (2, 40)),  # a two-channel signal
        (CNN | {"channels": [2, 2, 2], "kernel_size": 4}, (3,)),  # pooling stops at length 1
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


@pytest.mark.parametrize(
    ("input_shape", "conv"),
    [((40,), torch.nn.Conv1d), ((2, 40), torch.nn.Conv1d), ((1, 8, 8), torch.nn.Conv2d)],
)
def test_cnn_convolves_in_the_datas_dimensions(input_shape: tuple[int, ...], conv: type) -> None:
    model = build_model(CNN, input_shape, 3)

    assert {type(layer) for layer in model.features if "Conv" in type(layer).__name__} == {conv}


def test_a_1d_cnn_reloads_its_weights() -> None:
    """student.json + student.safetensors rebuild the student from its arch and input shape."""
    torch.manual_seed(0)
    model = build_model(CNN, (40,), 3).eval()
    rebuilt = build_model(CNN, (40,), 3).eval()
    x = torch.randn(4, 40)

    rebuilt.load_state_dict(model.state_dict())

    torch.testing.assert_close(rebuilt(x), model(x))


@pytest.mark.parametrize("input_shape", [(2, 3, 4, 5), ()])
def test_cnn_refuses_data_of_other_ranks(input_shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeMismatch, match=r"\(N, C, H, W\) or signals of shape \(N, C, L\)"):
        build_model(CNN, input_shape, 10)


def test_unknown_arch_is_unsupported() -> None:
    with pytest.raises(UnsupportedInput) as info:
        build_model({"arch": "hf", "config": {"model_type": "bert"}}, (64,), 10)
    assert info.value.code == "unsupported_arch"
