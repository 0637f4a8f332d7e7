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
    """Images (C, H, W) get 2-D convolutions, signals (C, L) 1-D ones, and a bare signal (L,) is
    one channel. Per ``channels`` entry: conv (same padding), activation, max-pool by 2 while every
    spatial size is at least 2; then flatten and an MLP head ending in the ``out`` layer."""

    def __init__(self, input_shape: tuple[int, ...], arch: dict, num_outputs: int):
        super().__init__()
        # Unsqueezing inside the model lets student.pt take (N, L) data exactly as it was trained.
        self.channel = _OneChannel() if len(input_shape) == 1 else nn.Identity()
        channels, *sizes = (1, *input_shape) if len(input_shape) == 1 else input_shape
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(sizes) == 1 else (nn.Conv2d, nn.MaxPool2d)
        kernel = int(arch.get("kernel_size", 3))
        layers: list[nn.Module] = []
        for out_channels in arch.get("channels", [16, 32]):
            layers += [
                conv(channels, out_channels, kernel, padding=kernel // 2),
                ACTIVATIONS[arch.get("activation", "relu")](),
            ]
            sizes = [_conv_size(size, kernel) for size in sizes]
            if min(sizes) >= 2:
                layers.append(pool(2))
                sizes = [size // 2 for size in sizes]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        in_features = channels * _numel(tuple(sizes))
        self.body = _hidden_layers(in_features, arch)
        self.out = nn.Linear(_width(in_features, arch), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.flatten(self.features(self.channel(x)))))


class _OneChannel(nn.Module):
    """(N, L) to (N, 1, L): a bare signal is a one-channel one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


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
    if len(input_shape) not in (1, 2, 3):
        raise ShapeMismatch(
            "A cnn needs images of shape (N, C, H, W) or signals of shape (N, C, L) or (N, L), "
            f"but the data has shape (N, {', '.join(map(str, input_shape))}); "
            "reshape the data, or use an mlp."
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
