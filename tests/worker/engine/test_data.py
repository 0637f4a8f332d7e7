import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.teachers import save_csv, save_npz, save_safetensors_data
from worker.engine import DataLoadError, UnsupportedInput
from worker.engine.data import load_dataset, split_validation

X = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
Y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("labelled", [True, False])
def test_npz_and_safetensors_load_as_float32_and_int64(tmp_path: Path, labelled: bool) -> None:
    y = Y if labelled else None
    for fmt, path in (
        ("npz", save_npz(tmp_path / "d.npz", X.astype(np.float64), y)),
        ("safetensors", save_safetensors_data(tmp_path / "d.st", X, y)),
    ):
        data = load_dataset(path, fmt)

        assert data.x.dtype == torch.float32 and data.input_shape == (2, 2)
        torch.testing.assert_close(data.x, torch.from_numpy(X))
        if labelled:
            assert data.y is not None and data.y.tolist() == Y.tolist()
        else:
            assert data.y is None


def test_csv_with_class_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", "a,label,b\n1.5,3,2\n-1,0.0,4e2\n")

    data = load_dataset(path, "csv")

    assert data.x.tolist() == [[1.5, 2.0], [-1.0, 400.0]]  # features in file order, label aside
    assert data.y is not None and data.y.tolist() == [3, 0]
    assert data.class_names is None


def test_csv_class_names_are_numbered_in_sorted_order(tmp_path: Path) -> None:
    path = save_csv(tmp_path / "d.csv", X, Y, class_names=["setosa", "virginica", "versicolor"])

    data = load_dataset(path, "csv")

    assert data.class_names == ["setosa", "versicolor", "virginica"]
    assert data.y is not None and data.y.tolist() == [0, 2, 1, 0, 2, 1]
    assert data.input_shape == (4,)


def test_validation_csv_reuses_the_training_names(tmp_path: Path) -> None:
    names = ["cat", "dog", "emu"]
    validation = _write(tmp_path / "v.csv", "f0,label\n1,emu\n2,emu\n")

    data = load_dataset(validation, "csv", class_names=names)

    assert data.y is not None and data.y.tolist() == [2, 2]  # not [0, 0], its own sorted order
    with pytest.raises(DataLoadError, match="yak"):
        load_dataset(_write(tmp_path / "w.csv", "f0,label\n1,yak\n"), "csv", class_names=names)


def test_csv_without_label_column_is_unlabelled(tmp_path: Path) -> None:
    data = load_dataset(_write(tmp_path / "d.csv", "a,b\n1,2\n3,4\n"), "csv")

    assert data.y is None and data.x.shape == (2, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a,label\n1,0\nx,1\n", r"line 3, column 'a': 'x' is not a number"),
        ("a,b,label\n1,2,0\n1,2\n", "line 3 has 2 cells"),
        ("a,label\n1,0\n2,\n", "line 3 has an empty label"),
        ("a,label\n", "header row and at least one data row"),
        ("label\n1\n", "no feature columns"),
        ("a,label\nnan,1\n", "NaN or infinite"),
        ("a,label\n1,0\n2,99999999999999999999\n", "class id 99999999999999999999; class ids"),
        ("a,label\n1,-99999999999999999999\n", "class ids run from 0 to 2147483647"),
    ],
)
def test_malformed_csv(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(DataLoadError, match=expected):
        load_dataset(_write(tmp_path / "d.csv", text), "csv")


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (X.astype(np.int64), Y, "x has dtype torch.int64; it must be float"),
        (X, Y.astype(np.float32), "y has dtype torch.float32"),
        (X, Y[:5], r"y has shape \(5,\); it must be \(6,\)"),
        (X, Y.reshape(6, 1), r"y has shape \(6, 1\)"),
        (X, -Y, "negative class ids"),
        (X, Y.astype(np.uint16), "y has dtype torch.uint16"),
        (X, Y.astype(np.uint64), "y has dtype torch.uint64"),
        (X, Y + 2**31, "class ids above 2147483647"),
        (X[0, 0], None, "must be \\(N, features...\\)"),
        (np.full_like(X, np.inf), None, "NaN or infinite"),
    ],
)
def test_malformed_arrays(
    tmp_path: Path, x: np.ndarray, y: np.ndarray | None, expected: str
) -> None:
    for fmt, path in (
        ("npz", save_npz(tmp_path / "d.npz", x, y)),
        ("safetensors", save_safetensors_data(tmp_path / "d.st", x, y)),
    ):
        with pytest.raises(DataLoadError, match=expected):
            load_dataset(path, fmt)


class _Marker:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def test_npz_with_pickled_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:
        np.savez(f, x=np.array([_Marker(marker)], dtype=object))

    with pytest.raises(DataLoadError, match=r"'x' in evil\.npz holds Python objects"):
        load_dataset(path, "npz")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("fmt", "content", "expected"),
    [
        ("npz", b"not a zip", "Could not read d as an npz archive"),
        ("safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", "Could not read d as safetensors"),
    ],
)
def test_unreadable_files(tmp_path: Path, fmt: str, content: bytes, expected: str) -> None:
    (tmp_path / "d").write_bytes(content)

    with pytest.raises(DataLoadError, match=expected):
        load_dataset(tmp_path / "d", fmt)


def test_npz_without_x(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with open(path, "wb") as f:
        np.savez(f, features=X)

    with pytest.raises(DataLoadError, match="array 'x'"):
        load_dataset(path, "npz")


def test_jsonl_is_not_supported_yet(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput) as info:
        load_dataset(_write(tmp_path / "d.jsonl", '{"text": "hi"}\n'), "jsonl")
    assert info.value.code == "unsupported_data"


def test_validation_split_is_seeded(tmp_path: Path) -> None:
    data = load_dataset(
        save_npz(tmp_path / "d.npz", np.arange(100, dtype=np.float32)[:, None]), "npz"
    )

    train, val = split_validation(data, 0.1, seed=7)
    _, same = split_validation(data, 0.1, seed=7)
    _, other = split_validation(data, 0.1, seed=8)

    assert (len(train), len(val)) == (90, 10)
    assert sorted(train.x.flatten().tolist() + val.x.flatten().tolist()) == list(range(100))
    assert torch.equal(val.x, same.x) and not torch.equal(val.x, other.x)


def test_too_little_data_to_split(tmp_path: Path) -> None:
    data = load_dataset(save_npz(tmp_path / "d.npz", X[:1]), "npz")

    with pytest.raises(DataLoadError, match="validation"):
        split_validation(data, 0.1, seed=0)
