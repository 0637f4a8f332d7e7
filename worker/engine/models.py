"""The architecture registry: an arch spec (the job's ``student`` / ``teacher.arch``) to a module.

The same function rebuilds a student from ``student.json``, so parameter names here are part of
the artifact format: every model ends in a linear layer called ``out``.

Each model also has ``forward_features`` (not part of ``student.pt``): its logits with every
layer's output, for the losses that match layers. An mlp's layers are its hidden layers; a cnn's
are its convolution blocks, then its hidden layers; a transformer's are its encoder layers.
"""

from collections.abc import Callable

import torch
from torch import nn

from worker.engine.errors import ShapeMismatch, UnsupportedInput
from worker.engine.features import Features

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

    def forward_features(self, x: torch.Tensor) -> Features:
        h, hidden = _run_hidden(self.body, self.flatten(x))
        return Features(self.out(h), hidden)


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
        # Where each convolution block ends in ``features``: the layers forward_features shows.
        self.block_ends = [i for i, m in enumerate(layers) if isinstance(m, conv)][1:]
        self.block_ends.append(len(layers))
        self.flatten = nn.Flatten()
        in_features = channels * _numel(tuple(sizes))
        self.body = _hidden_layers(in_features, arch)
        self.out = nn.Linear(_width(in_features, arch), num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(self.flatten(self.features(self.channel(x)))))

    def forward_features(self, x: torch.Tensor) -> Features:
        h, hidden, start = self.channel(x), [], 0
        layers = list(self.features)
        for end in self.block_ends:
            for layer in layers[start:end]:
                h = layer(h)
            hidden.append(h.movedim(1, -1))  # channels last
            start = end
        h, dense = _run_hidden(self.body, self.flatten(h))
        return Features(self.out(h), hidden + dense)


class Transformer(nn.Module):
    """A small encoder classifier for tensors: the data's positions are its tokens, with the
    channels as each token's features ((N, C, L): L tokens of C values; (N, C, H, W): H*W tokens
    of C). A table's (N, F) features are F tokens of one value, each feature embedded by its own
    weights (as in FT-Transformer: a shared embedding learns far slower there). Learned
    positions, pre-norm encoder layers, mean pooling, then the ``out`` layer."""

    def __init__(self, input_shape: tuple[int, ...], arch: dict, num_outputs: int):
        super().__init__()
        channels = 1 if len(input_shape) == 1 else input_shape[0]
        length = _numel(input_shape) // channels
        hidden = int(arch.get("hidden_size", 64))
        self.single_channel = len(input_shape) == 1
        # (N, F): per-feature weights; otherwise one linear map of the channels, for all tokens.
        # (Both attributes exist either way, as TorchScript compiles both branches of _tokens.)
        self.embed: nn.Module
        if self.single_channel:
            self.embed = nn.Identity()
            self.feature_scale = nn.Parameter(torch.randn(1, length, hidden))
        else:
            self.embed = nn.Linear(channels, hidden)
            self.register_buffer("feature_scale", torch.ones(1), persistent=False)
        self.position = nn.Parameter(torch.randn(1, length, hidden) * 0.02)
        self.layers = nn.ModuleList(
            EncoderLayer(
                hidden,
                int(arch.get("num_heads", 2)),
                int(arch.get("intermediate_size") or 4 * hidden),
                float(arch.get("dropout", 0.0)),
            )
            for _ in range(int(arch.get("num_layers", 2)))
        )
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, num_outputs)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.single_channel:
            return x.unsqueeze(-1) * self.feature_scale + self.position
        return self.embed(x.flatten(2).transpose(1, 2)) + self.position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._tokens(x)
        for layer in self.layers:
            h, _ = layer(h, False)
        return self.out(self.norm(h).mean(dim=1))

    def forward_features(self, x: torch.Tensor) -> Features:
        h, hidden, attentions = self._tokens(x), [], []
        for layer in self.layers:
            h, attention = layer(h, True)
            hidden.append(h)
            attentions.append(attention)
        return Features(self.out(self.norm(h).mean(dim=1)), hidden, attentions)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention and feed-forward, each with a residual; returns the attention
    distribution (B, heads, L, L) when asked, for attention transfer. Dropout applies to the
    attention's and the feed-forward's outputs, never to the attention weights, so the weights
    shown are true distributions even in training."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.attention_dropout = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(hidden)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, intermediate),
            nn.GELU(),
            nn.Linear(intermediate, hidden),
            nn.Dropout(dropout),
        )

    def forward(
        self, h: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.norm1(h)
        a, weights = self.attention(q, q, q, need_weights=need_weights, average_attn_weights=False)
        h = h + self.attention_dropout(a)
        return h + self.feed_forward(self.norm2(h)), weights


class _OneChannel(nn.Module):
    """(N, L) to (N, 1, L): a bare signal is a one-channel one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


TENSOR_ARCHS = ("mlp", "cnn", "transformer")


def build_model(arch: dict, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    """Build ``arch`` for inputs of shape ``input_shape`` (one example, no batch dimension)."""
    kind = arch.get("arch")
    if kind not in TENSOR_ARCHS:
        raise UnsupportedInput(
            f"Architecture {kind!r} cannot be built for tensor data; use one of {TENSOR_ARCHS}.",
            code="unsupported_arch",
        )
    if kind == "transformer":
        return _transformer(input_shape, arch, num_outputs)
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


def _transformer(input_shape: tuple[int, ...], arch: dict, num_outputs: int) -> nn.Module:
    hidden, heads = int(arch.get("hidden_size", 64)), int(arch.get("num_heads", 2))
    if hidden % heads:
        raise UnsupportedInput(
            f"A transformer's hidden_size ({hidden}) must be a multiple of num_heads ({heads}).",
            code="unsupported_arch",
        )
    if len(input_shape) not in (1, 2, 3):
        raise ShapeMismatch(
            "A transformer needs data of shape (N, F), (N, C, L) or (N, C, H, W), but the data "
            f"has shape (N, {', '.join(map(str, input_shape))})."
        )
    return Transformer(input_shape, arch, num_outputs)


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


def _run_hidden(body: nn.Sequential, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run an mlp body, keeping each hidden layer's output (after its activation and dropout)."""
    hidden = []
    for layer in body:
        h = layer(h)
        if isinstance(layer, nn.Linear):
            hidden.append(h)
        else:  # the activation, then dropout, replace the linear layer's output
            hidden[-1] = h
    return h, hidden


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
