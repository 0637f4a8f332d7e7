"""Loading the teacher, in each of the contract's formats, and holding it frozen.

Loading never runs code from the file: state dicts go through ``torch.load(weights_only=True)``,
whose unpickler refuses anything but tensors and plain containers.
"""

import contextlib
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from worker.engine import jit
from worker.engine.errors import (
    ShapeMismatch,
    TeacherLoadError,
    TrainingDiverged,
    UnsupportedInput,
    is_out_of_memory,
    last_line,
)
from worker.engine.features import Features, has_features
from worker.engine.models import build_model, count_parameters


class Teacher:
    """A frozen teacher: eval mode, no gradients, float32 ``(B, K)`` logits out, checked.

    ``arch`` is the teacher.arch it was built from (weights-only formats); ``tokenizer`` the one a
    Hugging Face teacher carries (its data is text, packed as ``worker.engine.text`` says)."""

    def __init__(
        self, module: nn.Module, fmt: str, arch: dict | None = None, tokenizer: object = None
    ):
        self.module = module
        self.format = fmt
        self.arch = arch
        self.tokenizer = tokenizer
        self.num_params = count_parameters(module)
        floats = [p.dtype for p in module.parameters() if p.is_floating_point()]
        self.dtype = floats[0] if floats else torch.float32
        _freeze(module)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # no_grad, not inference_mode: the gain would be small next to the forward pass, and
        # inference tensors refuse in-place use outside inference mode, a trap for later code.
        with torch.no_grad():
            try:
                logits = self.module(self._cast(x))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:
                if is_out_of_memory(e):  # not the batch's shape: run_job says out_of_memory
                    raise
                if _opens_files(e):
                    raise TeacherLoadError(
                        f"The teacher's code tried to open a file ({last_line(e)}). Teachers "
                        "run in a sandbox that holds only their job's own files: a teacher must "
                        "compute its outputs from its input alone."
                    ) from e
                raise ShapeMismatch(
                    f"The teacher failed on a batch of shape {_shape(x)}: {last_line(e)}. "
                    + self._advice(e)
                ) from e
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or len(logits) != len(x):
            raise ShapeMismatch(
                f"On a batch of shape {_shape(x)} the teacher returned {_describe(logits)}; "
                f"it must return a ({len(x)}, K) tensor: K class logits, or for regression K "
                f"real outputs (a single output as ({len(x)}, 1))."
            )
        return logits if logits.dtype == torch.float32 else logits.float()

    @property
    def has_features(self) -> bool:
        return has_features(self.module)

    def features(self, x: torch.Tensor) -> Features:
        """Logits, hidden states and attention, for the layer-matching losses (``has_features``
        says whether this teacher shows them; preflight checks before training needs them)."""
        with torch.no_grad():
            features = self.module.forward_features(self._cast(x))  # type: ignore[operator]
        features.logits = features.logits.float()
        return features

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        # Token ids stay integers; float inputs take the teacher's dtype (e.g. a half teacher).
        return x if x.dtype == self.dtype or not x.is_floating_point() else x.to(self.dtype)

    def check(self, sample: torch.Tensor, min_outputs: int = 2) -> int:
        """Run one batch and a batch of one (latency is measured on it); return K."""
        logits = self(sample)
        if len(sample) > 1:
            self(sample[:1])
        if logits.shape[1] < min_outputs:
            raise ShapeMismatch(
                f"The teacher returns {logits.shape[1]} output per example; distillation needs "
                "logits over at least 2 classes."
            )
        if not torch.isfinite(logits).all():
            raise TrainingDiverged(
                "The teacher returned NaN or infinite outputs on the first batch; check that the "
                "data is scaled the way the teacher was trained on."
            )
        return int(logits.shape[1])

    def _advice(self, error: Exception) -> str:
        # torch.export guards name the dimension they fixed; dimension 0 is the batch.
        if self.format == "torch_export" and "size()[0]" in str(error):
            return (
                "The teacher was exported for one batch size; export it with a dynamic batch "
                "dimension, e.g. dynamic_shapes=({0: torch.export.Dim('batch')},)."
            )
        return "Check that the data has the input shape the teacher expects."


def _opens_files(error: Exception) -> bool:
    """Whether the teacher failed opening a file (``aten::from_file`` and the like), which the
    sandbox refuses, rather than on the batch."""
    text = str(error)
    return any(
        sign in text
        for sign in ("unable to open file", "Read-only file system", "Permission denied")
    )


def load_teacher(
    path: Path, fmt: str, arch: dict | None, input_shape: tuple[int, ...], device: torch.device
) -> Teacher:
    """Load a tensor teacher (every format but hf_archive, which ``load_text_teacher`` loads:
    its data cannot be read before its tokenizer is)."""
    if fmt == "torchscript":
        module = _load_torchscript(path, device)
    elif fmt == "torch_export":
        module = _load_torch_export(path, device)
    elif fmt in ("state_dict", "safetensors"):
        weights = _read_state_dict(path) if fmt == "state_dict" else _read_safetensors(path)
        module = _build_from_weights(weights, arch, input_shape, fmt).to(device)
    else:
        raise UnsupportedInput(f"Unknown teacher format {fmt!r}.", code="unsupported_teacher")
    return Teacher(module, fmt, arch)


def load_text_teacher(
    path: Path, work_dir: Path, device: torch.device, max_unpacked_bytes: int
) -> Teacher:
    """A Hugging Face sequence classifier and its tokenizer, from a zip or tar archive unpacked
    (safely) into ``work_dir``."""
    from worker.engine import hf  # transformers is imported only by jobs that need it

    bundle = hf.load_hf_archive(path, work_dir, device, max_unpacked_bytes)
    return Teacher(bundle.model, "hf_archive", tokenizer=bundle.tokenizer)


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    try:
        return jit.load(path, device)
    except Exception as e:
        raise TeacherLoadError(
            f"Could not load {path.name} as TorchScript (torch.jit.save): {last_line(e)}"
        ) from e


def _load_torch_export(path: Path, device: torch.device) -> nn.Module:
    try:
        # A file object: given a path, torch.export insists on the .pt2 suffix, and stored
        # uploads have none.
        with open(path, "rb") as f:
            return torch.export.load(f).module().to(device)
    except Exception as e:
        raise TeacherLoadError(
            f"Could not load {path.name} as a torch.export program (torch.export.save): "
            f"{last_line(e)}"
        ) from e


def _read_state_dict(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TeacherLoadError(
            f"{path.name} holds Python objects that would run code when loaded, so it was "
            "refused; save only the weights: torch.save(model.state_dict(), path)."
        ) from e
    except Exception as e:
        raise TeacherLoadError(
            f"Could not read {path.name} as a torch.save state dict (is it truncated?): "
            f"{last_line(e)}"
        ) from e


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:
        raise TeacherLoadError(f"Could not read {path.name} as safetensors: {e}") from e


def _build_from_weights(
    weights: object, arch: dict | None, input_shape: tuple[int, ...], fmt: str
) -> nn.Module:
    """Rebuild ``arch`` and load the weights into it strictly. The output size comes from the
    weights' ``out`` layer; the input size from the data."""
    if arch is None:
        raise TeacherLoadError(
            f"A {fmt} teacher holds only weights; give its architecture in teacher.arch."
        )
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        raise TeacherLoadError(
            "The teacher file must hold a flat dict of tensors (model.state_dict())."
        )
    if "out.weight" not in weights:
        raise TeacherLoadError(
            "The teacher's weights have no 'out.weight'; parameter names must match the "
            f"architecture teacher.arch builds (e.g. a student.safetensors), got {_keys(weights)}."
        )
    model = build_model(arch, input_shape, int(weights["out.weight"].shape[0]))
    _check_weights(model, weights, input_shape)
    model.load_state_dict(weights, strict=True)
    return model


def _check_weights(model: nn.Module, weights: dict, input_shape: tuple[int, ...]) -> None:
    expected = model.state_dict()
    missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
    if missing or unexpected:
        raise TeacherLoadError(
            f"The teacher's weights do not match teacher.arch: missing {_keys(missing)}, "
            f"unexpected {_keys(unexpected)}."
        )
    for i, (name, tensor) in enumerate(expected.items()):
        if weights[name].shape == tensor.shape:
            continue
        found = f"{name} is {list(weights[name].shape)} in the file but {list(tensor.shape)}"
        if i == 0:  # the input layer: the data, not the architecture, is what does not fit
            raise ShapeMismatch(
                f"The data has shape (N, {', '.join(map(str, input_shape))}), which does not fit "
                f"the teacher: {found} for this data."
            )
        raise TeacherLoadError(
            f"The teacher's weights do not match teacher.arch on data of shape "
            f"(N, {', '.join(map(str, input_shape))}): {found} for that arch."
        )


def _freeze(module: nn.Module) -> None:
    # torch.export graphs refuse eval(): they fixed their train/eval behaviour when exported.
    with contextlib.suppress(NotImplementedError):
        module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _keys(keys: Iterable[str]) -> str:
    names = sorted(keys)
    if not names:
        return "none"
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more
