"""``student.onnx``: the student exported to ONNX with a dynamic batch axis (and, for text, a
dynamic length), checked in onnxruntime against the PyTorch student before it is kept.

The onnx packages are an optional extra (``distillery[onnx]``): a job that asks for ONNX on a
worker without them fails in preflight (``export_unavailable``), before any training. An export
that fails or disagrees with the student after training leaves no file behind; the recipe turns
that into a warning and the job keeps its other artifacts.
"""

import contextlib
import copy
import importlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from worker.engine.artifacts import atomic_write
from worker.engine.errors import EngineError, last_line

PACKAGES = ("onnx", "onnxscript", "onnxruntime")
FORMATS = ("onnx",)  # what a job's "export" may list
# onnxruntime's kernels round differently from PyTorch's: a few ulps of float32 per layer.
RTOL, ATOL = 1e-3, 1e-4


class ExportUnavailable(EngineError):
    code = "export_unavailable"


class ExportFailed(EngineError):
    code = "export_failed"


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    exporter: str  # "dynamo" (torch.export-based) or "torchscript" (the legacy tracer)
    max_abs_diff: float  # against the PyTorch student, over the checked batches
    batch_sizes: tuple[int, ...]  # the batch sizes it was checked at


def check_available(formats: Sequence[str]) -> None:
    """Preflight: raise ``ExportUnavailable`` unless this worker can write every format."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportUnavailable(f"Unknown export format(s) {unknown}; this worker writes onnx.")
    if "onnx" not in formats:
        return
    missing = [name for name in PACKAGES if not _importable(name)]
    if missing:
        raise ExportUnavailable(
            f'The job asks for "export": ["onnx"], but this worker lacks {", ".join(missing)}; '
            "install the onnx extra on the workers (pip install 'distillery[onnx]'), or submit "
            "the job without export."
        )


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def export_tensor_student(output_dir: Path, student: nn.Module, x: torch.Tensor) -> OnnxExport:
    """An mlp / cnn / transformer student: input ``x`` (B, ...), output ``logits`` (B, K).
    ``x`` is real data, at least two rows: the export traces its first two and is checked on
    one row and on all of them."""
    model = copy.deepcopy(student).cpu().float().eval()
    x = x.detach().cpu()
    batch = torch.export.Dim("batch")
    example = (_two_rows(x),)
    return _export(
        output_dir,
        model,
        example,
        input_names=["x"],
        dynamic_shapes=({0: batch},),
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        checks=[(x[:1],), (x,)],
    )


def export_text_student(
    output_dir: Path, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> OnnxExport:
    """A transformers classifier: inputs ``input_ids`` and ``attention_mask`` (B, L), int64,
    both axes dynamic (L up to the model's positions); output ``logits`` (B, K). Checked on one
    row, on all rows, and on all rows cut to half their length."""
    from worker.engine.hf import IdsAndMask

    wrapper = IdsAndMask(copy.deepcopy(model).cpu().float().eval()).eval()
    ids, mask = input_ids.detach().cpu().long(), attention_mask.detach().cpu().long()
    positions = getattr(model.config, "max_position_embeddings", None)
    batch = torch.export.Dim("batch")
    length = (
        torch.export.Dim("length", max=int(positions)) if positions else torch.export.Dim("length")
    )
    half = max(2, ids.shape[1] // 2)
    axes = {0: "batch", 1: "length"}
    return _export(
        output_dir,
        wrapper,
        (_two_rows(ids), _two_rows(mask)),
        input_names=["input_ids", "attention_mask"],
        dynamic_shapes=({0: batch, 1: length}, {0: batch, 1: length}),
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
        checks=[(ids[:1], mask[:1]), (ids, mask), (ids[:, :half], mask[:, :half])],
    )


def _two_rows(x: torch.Tensor) -> torch.Tensor:
    """The example to trace: torch.export takes a batch of one for a constant batch size."""
    return x[:2] if len(x) >= 2 else torch.cat([x[:1], x[:1]])


def _export(
    output_dir: Path,
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: list[str],
    dynamic_shapes: tuple[dict, ...],
    dynamic_axes: dict[str, dict[int, str]],
    checks: list[tuple[torch.Tensor, ...]],
) -> OnnxExport:
    """Export with the torch.export-based exporter, or, where that fails, with the legacy
    TorchScript tracer (deprecated, but it handles some models the new one does not); keep the
    file only once onnxruntime reproduces the student on every batch in ``checks``."""
    path = output_dir / "student.onnx"
    kept: list[tuple[str, float]] = []  # the exporter that worked and its largest difference

    def export_checked(tmp: Path) -> None:
        errors: list[str] = []
        for exporter in ("dynamo", "torchscript"):
            try:
                with _quiet():
                    if exporter == "dynamo":
                        torch.onnx.export(
                            model, example, str(tmp), dynamo=True, input_names=input_names,
                            output_names=["logits"], dynamic_shapes=dynamic_shapes,
                            external_data=False, verbose=False,
                        )  # fmt: skip
                    else:
                        torch.onnx.export(
                            model, example, str(tmp), dynamo=False, input_names=input_names,
                            output_names=["logits"], dynamic_axes=dynamic_axes,
                        )  # fmt: skip
                kept.append((exporter, _check(tmp, model, input_names, checks)))
                return
            except Exception as e:
                errors.append(f"{exporter}: {last_line(e)}")
                tmp.unlink(missing_ok=True)
        raise ExportFailed("The student could not be exported to ONNX: " + "; ".join(errors))

    atomic_write(path, export_checked)
    exporter, diff = kept[0]
    return OnnxExport(path, exporter, diff, tuple(len(c[0]) for c in checks))


@torch.no_grad()
def _check(
    path: Path, model: nn.Module, names: list[str], checks: list[tuple[torch.Tensor, ...]]
) -> float:
    """The largest difference between onnxruntime's logits and the student's; raises if any
    batch is off by more than the tolerance."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a check on a few rows; the worker's cores are training's
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in checks:
        expected = model(*inputs).float().numpy()
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
        if got.shape != expected.shape or not np.allclose(got, expected, RTOL, ATOL):
            raise ExportFailed(
                f"onnxruntime's outputs differ from the student's on a batch of "
                f"{tuple(inputs[0].shape)}: shapes {got.shape} and {expected.shape}, max "
                f"difference {_max_diff(got, expected):.3g}."
            )
        worst = max(worst, _max_diff(got, expected))
    return worst


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.shape == b.shape and a.size else float("inf")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print their steps and warn about what they skip (torchvision's ops, the
    legacy exporter's deprecation); none of it is the job's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def describe(export: OnnxExport) -> str:
    """One line for the job's log and its model card."""
    sizes = " and ".join(map(str, export.batch_sizes))
    return (
        f"student.onnx ({export.exporter} exporter, dynamic batch axis) matches the student in "
        f"onnxruntime on batches of {sizes} rows (max difference {export.max_abs_diff:.2g})."
    )
