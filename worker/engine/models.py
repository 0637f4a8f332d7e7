"""The architecture registry: an arch spec (the job's ``student`` / ``teacher.arch``) to a module.

The same function rebuilds a student from ``student.json``, so parameter names here are part of
the artifact format: every model ends in a linear layer called ``out``.
"""

from collections.abc import Callable

import torch
from torch import nn

from worker.engine.errors import ShapeMismatch, UnsupportedInput

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """Flatten, then ``hidden_sizes`` x (linear, activation, dropout), then the ``out`` layer."""

    def __init__(self, in_features: int, arch: dict, num_outputs: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.body = _hidden_layers(in_features, arch)
        self.out = nn.Linear(_width(in_features, arch), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.flatten(x)))


class CNN(nn.Module):
    """Per ``channels`` entry: conv (same padding), activation, 2x2 max-pool while the image is at
    least 2x2; then flatten and an MLP head ending in the ``out`` layer."""

    def __init__(self, input_shape: tuple[int, ...], arch: dict, num_outputs: int):
        super().__init__()
        channels, height, width = input_shape
        kernel = int(arch.get("kernel_size", 3))
        layers: list[nn.Module] = []
        for out_channels in arch.get("channels", [16, 32]):
            layers += [
                nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2),
                ACTIVATIONS[arch.get("activation", "relu")](),
            ]
            height, width = _conv_size(height, kernel), _conv_size(width, kernel)
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        in_features = channels * height * width
        self.body = _hidden_layers(in_features, arch)
        self.out = nn.Linear(_width(in_features, arch), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.flatten(self.features(x))))


def build_model(arch: dict, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Build ``arch`` for inputs of shape ``input_shape`` (one example, no batch dimension)."""
    kind = arch.get("arch")
    if kind not in ("mlp", "cnn"):
        raise UnsupportedInput(
            f"Architecture {kind!r} is not supported by this worker yet; use 'mlp' or 'cnn'.",
            code="unsupported_arch",
        )
    if arch.get("activation", "relu") not in ACTIVATIONS:
        raise UnsupportedInput(
            f"Activation {arch['activation']!r} is not supported; "
            f"use one of {sorted(ACTIVATIONS)}.",
            code="unsupported_arch",
        )
    if kind == "mlp":
        return MLP(_numel(input_shape), arch, num_outputs)
    if len(input_shape) != 3:
        raise ShapeMismatch(
            f"A cnn needs image data of shape (N, C, H, W), but the data has shape "
            f"(N, {', '.join(map(str, input_shape))}); reshape the data, or use an mlp."
        )
    return CNN(input_shape, arch, num_outputs)


def count_parameters(module: nn.Module) -> int:
    """Trainable-weight count: parameters only, not buffers (e.g. batch-norm running stats)."""
    return sum(p.numel() for p in module.parameters())


def _hidden_layers(in_features: int, arch: dict) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in arch.get("hidden_sizes", [128]):
        layers += [nn.Linear(in_features, width), ACTIVATIONS[arch.get("activation", "relu")]()]
        if arch.get("dropout", 0.0) > 0:
            layers.append(nn.Dropout(arch["dropout"]))
        in_features = width
    return nn.Sequential(*layers)


def _width(in_features: int, arch: dict) -> int:
    hidden = arch.get("hidden_sizes", [128])
    return hidden[-1] if hidden else in_features


def _conv_size(size: int, kernel: int) -> int:
    # Padding kernel // 2 keeps the size for odd kernels; an even kernel adds one pixel.
    return size + 2 * (kernel // 2) - kernel + 1


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
