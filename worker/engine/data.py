"""Data sets in the contract's formats, checked and held as tensors: ``x`` float32 (N, ...) and
``y`` int64 (N,) class ids, float32 (N, K) regression targets (a (N,) ``y`` is K = 1), or None
for unlabelled data. Text (jsonl) is tokenized by the teacher's tokenizer into int64 ``x`` of
shape (N, 2, L): token ids and attention mask, packed (``worker.engine.text``)."""

import csv
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from worker.engine.errors import DataLoadError, UnsupportedInput

# Class ids, as the upload check (app/files/formats/labels.py) takes them: 0 to MAX_CLASS_ID, in
# a dtype torch can compare and cast (it cannot for uint16, uint32 and uint64 on the CPU).
MAX_CLASS_ID = 2**31 - 1
CLASS_ID_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


@dataclass
class Dataset:
    x: torch.Tensor
    y: torch.Tensor | None
    class_names: list[str] | None = None  # csv label names, in class-id order
    text: bool = False  # x holds packed token ids and attention masks

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device: torch.device) -> "Dataset":
        y = None if self.y is None else self.y.to(device)
        return replace(self, x=self.x.to(device), y=y)


def load_dataset(
    path: Path,
    fmt: str,
    class_names: list[str] | None = None,
    task: str = "classification",
    tokenizer: object = None,
    max_length: int = 128,
) -> Dataset:
    """Load and check a data set. ``class_names`` maps csv label names the way the training data
    did, so a validation file gets the same class ids. For ``task`` "regression" the labels are
    real targets (integers are taken as numbers, not class ids). Text needs the teacher's
    ``tokenizer``; sequences are cut at ``max_length`` tokens."""
    regression = task == "regression"
    if fmt == "jsonl":
        return _load_text(path, tokenizer, max_length, regression)
    if tokenizer is not None:
        raise UnsupportedInput(
            f"A Hugging Face teacher reads text, but {path.name} is {fmt}; give jsonl data "
            '({"text": ..., "label": ...} per line).',
            code="unsupported_data",
        )
    if fmt == "npz":
        x, y = _read_npz(path)
        names = None
    elif fmt == "safetensors":
        x, y = _read_safetensors(path)
        names = None
    elif fmt == "csv":
        x, y, names = _read_csv(path, class_names, regression)
    else:
        raise UnsupportedInput(f"Unknown data format {fmt!r}.", code="unsupported_data")
    if regression:
        _check_x(x, path.name)
        y = None if y is None else _regression_targets(y, len(x), path.name)
        return Dataset(x.float().contiguous(), y, None)
    _check(x, y, path.name)
    return Dataset(x.float().contiguous(), None if y is None else y.long(), names)


def _load_text(path: Path, tokenizer: object, max_length: int, regression: bool) -> Dataset:
    from worker.engine.text import load_jsonl

    if tokenizer is None:
        raise UnsupportedInput(
            "Text (jsonl) data needs a teacher that carries a tokenizer: a Hugging Face model "
            "archive (hf_archive).",
            code="unsupported_data",
        )
    if regression:
        raise UnsupportedInput(
            "Text jobs are classification for now; drop task regression.", code="unsupported_data"
        )
    x, y = load_jsonl(path, tokenizer, max_length)
    return Dataset(x, y, None, text=True)


def same_length(a: Dataset, b: Dataset, tokenizer: object) -> tuple[Dataset, Dataset]:
    """Pad two text data sets to one sequence length (padding tokens, mask 0), so that training
    and validation batches have one shape."""
    length = max(a.x.shape[-1], b.x.shape[-1])
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    return _pad_text(a, length, pad_id), _pad_text(b, length, pad_id)


def _pad_text(data: Dataset, length: int, pad_id: int) -> Dataset:
    missing = length - data.x.shape[-1]
    if missing == 0:
        return data
    padding = torch.zeros(len(data), 2, missing, dtype=data.x.dtype)
    padding[:, 0] = pad_id
    return replace(data, x=torch.cat([data.x, padding], dim=-1))


def split_validation(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded random split: the same seed always holds out the same rows."""
    n_val = max(1, round(len(data) * fraction))
    if fraction <= 0 or n_val >= len(data):
        raise DataLoadError(
            f"Cannot hold out {fraction:.0%} of {len(data)} rows for validation; "
            "upload more data or a separate validation file."
        )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return _subset(data, order[n_val:]), _subset(data, order[:n_val])


def _subset(data: Dataset, index: torch.Tensor) -> Dataset:
    y = None if data.y is None else data.y[index]
    return replace(data, x=data.x[index], y=y)


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        # allow_pickle=False: an object array would otherwise unpickle (and run) arbitrary code.
        archive = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataLoadError(f"Could not read {path.name} as an npz archive: {e}") from e
    if not isinstance(archive, np.lib.npyio.NpzFile) or "x" not in archive:
        raise DataLoadError(f"{path.name} is not an npz archive holding an array 'x'.")
    with archive:
        x = _npz_array(archive, "x", path)
        y = _npz_array(archive, "y", path) if "y" in archive else None
    return x, y


def _npz_array(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> torch.Tensor:
    try:
        return _numeric_tensor(archive[name], name)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataLoadError(
                f"Array '{name}' in {path.name} holds Python objects, which are never loaded "
                "(loading them could run code); save numeric arrays."
            ) from e
        raise DataLoadError(f"Could not read array '{name}' in {path.name}: {e}") from e


def _numeric_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    if array.dtype.kind not in "biuf":
        raise DataLoadError(f"Array '{name}' has dtype {array.dtype}; it must be numeric.")
    return torch.from_numpy(np.ascontiguousarray(array))


def _read_safetensors(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise DataLoadError(f"Could not read {path.name} as safetensors: {e}") from e
    if "x" not in tensors:
        raise DataLoadError(f"{path.name} holds no tensor 'x' (it has {sorted(tensors)}).")
    return tensors["x"], tensors.get("y")


def _read_csv(
    path: Path, class_names: list[str] | None, regression: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataLoadError(f"Could not read {path.name} as UTF-8 csv: {e}") from e
    if len(rows) < 2:
        raise DataLoadError(f"{path.name} needs a header row and at least one data row.")
    header = [name.strip() for name in rows[0][1]]
    label_column = header.index("label") if "label" in header else None
    features = [i for i in range(len(header)) if i != label_column]
    if not features:
        raise DataLoadError(f"{path.name} has no feature columns besides 'label'.")
    x = np.empty((len(rows) - 1, len(features)), dtype=np.float32)
    labels: list[str] = []
    for r, (line, row) in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataLoadError(
                f"{path.name} line {line} has {len(row)} cells but the header has {len(header)}."
            )
        x[r] = [_csv_number(row[i], header[i], line, path) for i in features]
        if label_column is not None:
            labels.append(row[label_column].strip())
    if label_column is None:
        return torch.from_numpy(x), None, None
    if regression:
        targets = [_csv_number(label, "label", n + 2, path) for n, label in enumerate(labels)]
        return torch.from_numpy(x), torch.tensor(targets, dtype=torch.float32), None
    y, names = _csv_labels(labels, class_names, path)
    return torch.from_numpy(x), y, names


def _csv_number(cell: str, column: str, line: int, path: Path) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DataLoadError(
            f"{path.name} line {line}, column '{column}': {cell!r} is not a number."
        ) from None


def _csv_labels(
    labels: list[str], class_names: list[str] | None, path: Path
) -> tuple[torch.Tensor, list[str] | None]:
    """Integer labels are class ids; anything else is a class name, numbered in sorted order."""
    if "" in labels:
        line = labels.index("") + 2
        raise DataLoadError(f"{path.name} line {line} has an empty label.")
    ids = [_as_class_id(label) for label in labels]
    if class_names is None and all(i is not None for i in ids):
        return _class_ids([i for i in ids if i is not None], path), None
    names = class_names if class_names is not None else sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataLoadError(
            f"{path.name} has labels {unknown[:5]} that the training data does not have."
        )
    return torch.tensor([index[label] for label in labels], dtype=torch.int64), names


def _class_ids(ids: list[int], path: Path) -> torch.Tensor:
    outside = [i for i in ids if not 0 <= i <= MAX_CLASS_ID]
    if outside:
        raise DataLoadError(
            f"{path.name} has class id {outside[0]}; class ids run from 0 to {MAX_CLASS_ID}."
        )
    return torch.tensor(ids, dtype=torch.int64)


def _as_class_id(label: str) -> int | None:
    # Accept "3" and "3.0" (spreadsheets write integers as floats) as class ids.
    try:
        return int(label)  # exactly, however long
    except ValueError:
        pass
    try:
        value = float(label)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


def _regression_targets(y: torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """Real targets as float32 (N, K); integer targets are taken as numbers."""
    if y.is_complex() or y.dtype == torch.bool:
        raise DataLoadError(f"In {name}, y has dtype {y.dtype}; regression needs real numbers.")
    if y.ndim not in (1, 2) or len(y) != rows:
        raise DataLoadError(
            f"In {name}, y has shape {tuple(y.shape)}; for regression it must be ({rows},) or "
            f"({rows}, K): one target (or K) per row."
        )
    y = y.float().reshape(rows, -1).contiguous()
    if not torch.isfinite(y).all():
        raise DataLoadError(f"In {name}, y holds NaN or infinite values; clean the data first.")
    return y


def _check(x: torch.Tensor, y: torch.Tensor | None, name: str) -> None:
    _check_x(x, name)
    if y is None:
        return
    if y.dtype not in CLASS_ID_DTYPES:
        raise DataLoadError(
            f"In {name}, y has dtype {y.dtype}; it must hold int64 class ids "
            '(for real-valued targets, set "task": "regression").'
        )
    if tuple(y.shape) != (len(x),):
        raise DataLoadError(
            f"In {name}, y has shape {tuple(y.shape)}; it must be ({len(x)},): "
            "one class id per row."
        )
    if (y < 0).any():
        raise DataLoadError(f"In {name}, y holds negative class ids; ids start at 0.")
    if int(y.max()) > MAX_CLASS_ID:
        raise DataLoadError(f"In {name}, y holds class ids above {MAX_CLASS_ID}.")


def _check_x(x: torch.Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise DataLoadError(
            f"In {name}, x has dtype {x.dtype}; it must be float (e.g. x.astype('float32'))."
        )
    if x.ndim < 2 or len(x) == 0:
        raise DataLoadError(
            f"In {name}, x has shape {tuple(x.shape)}; it must be (N, features...) with N >= 1."
        )
    if not torch.isfinite(x).all():
        raise DataLoadError(f"In {name}, x holds NaN or infinite values; clean the data first.")
