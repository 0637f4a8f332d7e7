"""Format detection on real files written by torch, numpy and safetensors, and refusal of files
that would run code. Every payload here would create ``marker`` if anything executed it."""

import io
import json
import os
import pickle
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file
from torch import nn

from app.files.formats import (
    ACCEPTED_FORMATS,
    Limits,
    Purpose,
    UnsafeFile,
    UnsupportedFormat,
    accepted_formats,
    detect,
)

ROOT = Path(__file__).resolve().parents[3]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload ran"


def _payload(marker: Path, func: Callable = os.system) -> object:
    class Payload:
        def __reduce__(self):
            return (func, (f"touch {marker}",))

    return Payload()


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict | None = None) -> Path:
    """Copy every member of ``src``, swapping the ones whose name ends with a key of ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
        root = zin.namelist()[0].split("/")[0]
        for name, data in (add or {}).items():
            zout.writestr(f"{root}/{name}", data)
    return dst


def _torch_save_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- real teachers, written once per module --------------------------------------------------


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("teachers")
    mlp, cnn = MLP().eval(), CNN().eval()
    files = {name: out / name for name in ("sd.pt", "sd4.pt", "mlp_ts.pt", "cnn_ts.pt")}
    torch.save(mlp.state_dict(), files["sd.pt"])
    torch.save(cnn.state_dict(), files["sd4.pt"], pickle_protocol=4)
    torch.jit.save(torch.jit.script(mlp), files["mlp_ts.pt"])
    torch.jit.save(torch.jit.trace(cnn, torch.randn(1, 1, 8, 8)), files["cnn_ts.pt"])
    batch = torch.export.Dim("batch", min=2, max=1024)
    program = torch.export.export(mlp, (torch.randn(4, 4),), dynamic_shapes={"x": {0: batch}})
    files["mlp.pt2"] = out / "mlp.pt2"
    torch.export.save(program, files["mlp.pt2"])
    files["cnn.pt2"] = out / "cnn.pt2"
    torch.export.save(torch.export.export(cnn, (torch.randn(2, 1, 8, 8),)), files["cnn.pt2"])
    files["weights.safetensors"] = out / "weights.safetensors"
    save_file(mlp.state_dict(), files["weights.safetensors"])
    return files


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("sd.pt", "state_dict"),
        ("sd4.pt", "state_dict"),
        ("mlp_ts.pt", "torchscript"),
        ("cnn_ts.pt", "torchscript"),
        ("mlp.pt2", "torch_export"),
        ("cnn.pt2", "torch_export"),
        ("weights.safetensors", "safetensors"),
    ],
)
def test_real_teachers_are_recognised(teachers: dict[str, Path], name: str, fmt: str) -> None:
    assert detect(teachers[name], "teacher").format == fmt


def test_teacher_meta(teachers: dict[str, Path]) -> None:
    assert detect(teachers["weights.safetensors"], "teacher").meta == {
        "tensors": 4,
        "params": 4 * 8 + 8 + 8 * 3 + 3,
        "dtypes": ["F32"],
    }
    assert detect(teachers["sd.pt"], "teacher").meta == {"storages": 4, "storage_bytes": 268}
    assert detect(teachers["mlp.pt2"], "teacher").meta["models"] == ["model"]


@pytest.mark.parametrize("name", ["sd.pt", "mlp_ts.pt", "mlp.pt2"])
def test_teacher_uploaded_as_dataset(teachers: dict[str, Path], name: str) -> None:
    with pytest.raises(UnsupportedFormat, match="purpose 'teacher'"):
        detect(teachers[name], "dataset")


def test_safetensors_weights_are_not_a_dataset(teachers: dict[str, Path]) -> None:
    with pytest.raises(UnsupportedFormat, match="needs a float tensor 'x'"):
        detect(teachers["weights.safetensors"], "dataset")


# --- real data sets ---------------------------------------------------------------------------


def _xy(rows: int = 20, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(rows, dtype=np.int64) % classes
    return rng.normal(size=(rows, 1, 4, 4)).astype(np.float32), y


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_dataset(tmp_path: Path, save: Callable) -> None:
    x, y = _xy()
    save(tmp_path / "d.npz", x=x, y=y)
    found = detect(tmp_path / "d.npz", "dataset")
    assert found.format == "npz"
    assert found.meta == {
        "rows": 20,
        "sample_shape": [1, 4, 4],
        "x_dtype": "float32",
        "has_labels": True,
        "label_kind": "class",
        "num_classes": 3,
        "label_dtype": "int64",
    }


def test_npz_without_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3), dtype=np.float64))
    meta = detect(tmp_path / "d.npz", "dataset").meta
    assert meta["has_labels"] is False and meta["num_classes"] is None


def test_npz_labels_must_match_and_be_ids(tmp_path: Path) -> None:
    x, y = _xy()
    np.savez(tmp_path / "short.npz", x=x, y=y[:-1])
    with pytest.raises(UnsupportedFormat, match="'y' must hold integer class ids"):
        detect(tmp_path / "short.npz", "dataset")
    np.savez(tmp_path / "neg.npz", x=x, y=y - 1)
    with pytest.raises(UnsupportedFormat, match="class id -1"):
        detect(tmp_path / "neg.npz", "dataset")


@pytest.mark.parametrize("shape", [(20,), (20, 2)])
def test_npz_with_real_labels_is_a_regression_set(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x, _ = _xy()
    np.savez(tmp_path / "d.npz", x=x, y=np.linspace(-1, 1, 20 * len(shape)).reshape(shape))
    meta = detect(tmp_path / "d.npz", "dataset").meta
    assert (meta["has_labels"], meta["label_kind"]) == (True, "real")
    assert (meta["num_classes"], meta["num_targets"]) == (None, len(shape))
    np.savez(tmp_path / "bad.npz", x=x, y=np.zeros((20, 2, 2)))
    with pytest.raises(UnsupportedFormat, match="real-valued targets"):
        detect(tmp_path / "bad.npz", "dataset")


def test_safetensors_with_real_labels_is_a_regression_set(tmp_path: Path) -> None:
    x, _ = _xy(rows=10)
    y = torch.linspace(0, 1, 10)
    save_file({"x": torch.from_numpy(x), "y": y}, tmp_path / "d.safetensors")
    meta = detect(tmp_path / "d.safetensors", "dataset").meta
    assert (meta["label_kind"], meta["label_dtype"], meta["num_targets"]) == ("real", "float32", 1)


def test_npz_uploaded_as_teacher(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3), dtype=np.float32))
    with pytest.raises(UnsupportedFormat, match="purpose 'dataset'"):
        detect(tmp_path / "d.npz", "teacher")


def test_safetensors_dataset(tmp_path: Path) -> None:
    x, y = _xy(rows=10, classes=5)
    save_file({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / "d.safetensors")
    found = detect(tmp_path / "d.safetensors", "dataset")
    assert (found.format, found.meta["rows"], found.meta["num_classes"]) == ("safetensors", 10, 5)
    assert found.meta["sample_shape"] == [1, 4, 4]


def test_truncated_safetensors(tmp_path: Path) -> None:
    data = safetensors_bytes({"x": torch.zeros(10, 4)})
    (tmp_path / "t.safetensors").write_bytes(data[:-8])
    with pytest.raises(UnsupportedFormat, match="safetensors file is invalid"):
        detect(tmp_path / "t.safetensors", "dataset")


def test_csv_with_integer_labels(tmp_path: Path) -> None:
    rows = "\n".join(f"{i * 0.5},{-i},{i % 4}" for i in range(25_000))
    (tmp_path / "d.csv").write_text(f"a,b,label\n{rows}\n")
    found = detect(tmp_path / "d.csv", "dataset")
    assert found.format == "csv"
    assert found.meta == {
        "rows": 25_000,
        "sample_shape": [2],
        "has_labels": True,
        "label_kind": "class",
        "columns": ["a", "b"],
        "num_classes": 4,
        "classes": None,
    }


def test_csv_with_class_names_and_a_bom(tmp_path: Path) -> None:
    text = "\ufefflabel,petal,sepal\r\nsetosa,1,2\r\nvirginica,3,4\r\nsetosa,5,6\r\n"
    (tmp_path / "d.csv").write_text(text, encoding="utf-8")
    meta = detect(tmp_path / "d.csv", "dataset").meta
    assert meta["columns"] == ["petal", "sepal"]
    assert (meta["classes"], meta["num_classes"]) == (["setosa", "virginica"], 2)


def test_csv_with_real_labels_is_a_regression_set(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,3\n3,4,0.25\n5,6,-1e3\n")
    meta = detect(tmp_path / "d.csv", "dataset").meta
    assert (meta["has_labels"], meta["label_kind"], meta["num_classes"]) == (True, "real", None)
    (tmp_path / "names.csv").write_text("a,label\n1,0.5\n2,cat\n")
    assert detect(tmp_path / "names.csv", "dataset").meta["label_kind"] == "class"


def test_csv_without_labels(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    meta = detect(tmp_path / "d.csv", "dataset").meta
    assert meta["has_labels"] is False and meta["rows"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,label\n1,2,0\n3,oops,1\n", "Line 3, column 'b'"),
        ("a,b\n1,2\n3\n", "Line 3 has 1 columns"),
        ("a,b\n", "no data rows"),
        ("1,2,3\n4,5,6\n", "looks like data"),
        ("a,label\n1,-1\n", "must be 0 or more"),
        ("a,b\n1,inf\n", "not a finite number"),
    ],
)
def test_csv_problems_are_explained(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(UnsupportedFormat, match=message):
        detect(tmp_path / "d.csv", "dataset")


def test_jsonl(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"sample {i}", "label": i % 2}) for i in range(7)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n\n")
    found = detect(tmp_path / "d.jsonl", "dataset")
    assert (found.format, found.meta) == (
        "jsonl",
        {"rows": 7, "has_labels": True, "num_classes": 2, "lm_kind": "text"},
    )
    (tmp_path / "u.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert detect(tmp_path / "u.jsonl", "dataset").meta["has_labels"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"text": "a", "label": 0}\n{"text": "b"}\n', "label all lines or none"),
        ('{"text": "a", "label": "cat"}\n', "must be a class id"),
        ('{"text": 3}\n', '"text" must be a string'),
        ('{"text": "a"}\n{not json\n', "Line 2 is not valid JSON"),
        ('[{"text": "a"}]', "JSON array"),
    ],
)
def test_jsonl_problems_are_explained(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "d.jsonl").write_text(text)
    with pytest.raises(UnsupportedFormat, match=message):
        detect(tmp_path / "d.jsonl", "dataset")


def test_text_uploaded_as_teacher(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("a,label\n1,0\n")
    with pytest.raises(UnsupportedFormat, match="purpose 'dataset'"):
        detect(tmp_path / "d.csv", "teacher")


# --- Hugging Face model directories -----------------------------------------------------------


def _hf_files(weights: str = "safetensors", **config: object) -> dict[str, bytes]:
    state = MLP().state_dict()
    files = {
        "config.json": json.dumps({"model_type": "bert", "id2label": {"0": "a"}} | config).encode(),
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
    }
    if weights == "safetensors":
        files["model.safetensors"] = safetensors_bytes(state)
    else:
        files["pytorch_model.bin"] = _torch_save_bytes(state)
    return files


def _under(root: str, files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{root}/{name}": data for name, data in files.items()}


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_hf_archive(tmp_path: Path, container: str) -> None:
    files = _under("my-model", _hf_files())
    path = tmp_path / "model"
    _zip(path, files) if container == "zip" else _tar(path, files)
    found = detect(path, "teacher")
    assert found.format == "hf_archive"
    assert found.meta["model_type"] == "bert"
    assert found.meta["has_tokenizer"] is True
    assert found.meta["root"] == "my-model"


def test_hf_archive_at_the_root_without_tokenizer(tmp_path: Path) -> None:
    files = _hf_files()
    del files["tokenizer.json"], files["tokenizer_config.json"]
    meta = detect(_zip(tmp_path / "m.zip", files), "teacher").meta
    assert (meta["root"], meta["has_tokenizer"]) == ("", False)


def test_hf_tar_of_a_directory_listing(tmp_path: Path) -> None:
    files = _under(".", _hf_files())  # what `tar czf m.tgz -C my-model .` writes
    assert detect(_tar(tmp_path / "m.tgz", files), "teacher").meta["root"] == ""


def test_hf_archive_needs_weights(tmp_path: Path) -> None:
    files = {"config.json": b'{"model_type": "bert"}'}
    with pytest.raises(UnsupportedFormat, match="no weights"):
        detect(_tar(tmp_path / "m.tgz", files), "teacher")


def test_hf_archive_uploaded_as_dataset(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormat, match="only a teacher"):
        detect(_tar(tmp_path / "m.tgz", _hf_files()), "dataset")


# --- malicious files: refused, and nothing runs -----------------------------------------------


@pytest.mark.parametrize(
    "func", [os.system, exec, eval, subprocess.Popen], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_bare_pickle_payloads(tmp_path: Path, marker: Path, func: Callable, protocol: int) -> None:
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_payload(marker, func), protocol=protocol))
    for purpose in ("teacher", "dataset"):
        with pytest.raises(UnsafeFile, match="loading it would run code"):
            detect(tmp_path / "evil.pkl", purpose)


def test_torch_save_of_a_payload(tmp_path: Path, marker: Path) -> None:
    torch.save({"w": _payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFile, match=r"'evil/data.pkl' imports posix\.system"):
        detect(tmp_path / "evil.pt", "teacher")


def test_legacy_torch_save_of_a_payload(tmp_path: Path, marker: Path) -> None:
    torch.save({"w": _payload(marker)}, tmp_path / "e.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFile, match=r"posix\.system"):
        detect(tmp_path / "e.pt", "teacher")


def test_torch_save_of_a_whole_module(tmp_path: Path) -> None:
    torch.save(MLP(), tmp_path / "module.pt")
    with pytest.raises(UnsafeFile, match=r"Save model\.state_dict\(\)"):
        detect(tmp_path / "module.pt", "teacher")


def test_npz_with_an_object_array(tmp_path: Path, marker: Path) -> None:
    x = np.zeros((4, 2), dtype=np.float32)
    np.savez(tmp_path / "evil.npz", x=x, y=np.array([_payload(marker)] * 4, dtype=object))
    with pytest.raises(UnsafeFile, match="dtype object"):
        detect(tmp_path / "evil.npz", "dataset")


@pytest.mark.parametrize("member", ["constants.pkl", "data.pkl"])
def test_torchscript_with_an_evil_pickle(
    teachers: dict[str, Path], tmp_path: Path, marker: Path, member: str
) -> None:
    evil = pickle.dumps(_payload(marker), protocol=2)
    path = _rewrite_zip(teachers["mlp_ts.pt"], tmp_path / "evil_ts.pt", {f"/{member}": evil})
    with pytest.raises(UnsafeFile, match=r"posix\.system"):
        detect(path, "teacher")


def test_pt2_with_evil_sample_inputs(
    teachers: dict[str, Path], tmp_path: Path, marker: Path
) -> None:
    # torch.export.load falls back to torch.load(weights_only=False) for sample inputs.
    evil = _torch_save_bytes(((_payload(marker),), {}))
    path = _rewrite_zip(teachers["mlp.pt2"], tmp_path / "e.pt2", {"sample_inputs/model.pt": evil})
    with pytest.raises(UnsafeFile, match=r"sample_inputs/model\.pt/.*posix\.system"):
        detect(path, "teacher")


@pytest.mark.parametrize("protocol", [0, 2])
def test_pt2_with_an_evil_bare_pickle(
    teachers: dict[str, Path], tmp_path: Path, marker: Path, protocol: int
) -> None:
    evil = pickle.dumps(_payload(marker), protocol=protocol)
    path = _rewrite_zip(
        teachers["mlp.pt2"], tmp_path / "e.pt2", {}, add={"data/constants/opaque_obj_0": evil}
    )
    with pytest.raises(UnsafeFile, match="opaque_obj_0"):
        detect(path, "teacher")


def _edit_program(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    with zipfile.ZipFile(src) as zf:
        name = next(n for n in zf.namelist() if n.endswith("models/model.json"))
        program = json.loads(zf.read(name))
    edit(program)
    return _rewrite_zip(src, dst, {"models/model.json": json.dumps(program).encode()})


def _set_guard(marker: Path) -> Callable[[dict], None]:
    def edit(program: dict) -> None:
        program["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    return edit


def _set_sym_expr(marker: Path) -> Callable[[dict], None]:
    # sympy.sympify evaluates this string; no dunder-free spelling gets through either.
    def edit(program: dict) -> None:
        sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"]
        expr = f"S.__class__.__init__.__globals__['__builtins__']['exec']('touch {marker}')"
        sizes[0]["as_expr"]["expr_str"] = expr  # the dynamic batch dimension

    return edit


def _set_target(marker: Path) -> Callable[[dict], None]:
    def edit(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    return edit


@pytest.mark.parametrize("make_edit", [_set_guard, _set_sym_expr, _set_target])
def test_pt2_program_that_would_run_code(
    teachers: dict[str, Path], tmp_path: Path, marker: Path, make_edit: Callable
) -> None:
    path = _edit_program(teachers["mlp.pt2"], tmp_path / "e.pt2", make_edit(marker))
    with pytest.raises(UnsafeFile, match=r"models/model\.json"):
        detect(path, "teacher")


def test_pt2_with_aotinductor_code(teachers: dict[str, Path], tmp_path: Path) -> None:
    add = {"data/aotinductor/model/model.so": b"\x7fELF"}
    path = _rewrite_zip(teachers["mlp.pt2"], tmp_path / "aoti.pt2", {}, add=add)
    with pytest.raises(UnsafeFile, match="AOTInductor"):
        detect(path, "teacher")


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_hf_archive_with_an_evil_pytorch_model_bin(
    tmp_path: Path, marker: Path, container: str
) -> None:
    files = _hf_files("bin")
    files["pytorch_model.bin"] = _torch_save_bytes({"w": _payload(marker)})
    path = tmp_path / "m"
    _zip(path, files) if container == "zip" else _tar(path, files)
    # The worker never loads pickled weights, so the upload refuses them by name, unread.
    with pytest.raises(UnsafeFile, match=r"pickled weights .*pytorch_model\.bin"):
        detect(path, "teacher")


def test_hf_archive_with_a_pickled_training_args(tmp_path: Path, marker: Path) -> None:
    files = _hf_files() | {"training_args.bin": pickle.dumps(_payload(marker), protocol=4)}
    with pytest.raises(UnsafeFile, match="remove that file"):
        detect(_tar(tmp_path / "m.tgz", files), "teacher")


@pytest.mark.parametrize(
    ("config", "key", "value"),
    [
        ("config.json", "auto_map", {"AutoModel": "modeling_evil.EvilModel"}),
        ("tokenizer_config.json", "auto_map", {"AutoTokenizer": ["tok_evil.Evil", None]}),
        ("config.json", "trust_remote_code", True),
    ],
)
@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_hf_archive_needing_remote_code(
    tmp_path: Path, config: str, key: str, value: object, container: str
) -> None:
    files = _hf_files()
    files[config] = json.dumps(json.loads(files[config]) | {key: value}).encode()
    path = tmp_path / "m"
    _zip(path, _under("m", files)) if container == "zip" else _tar(path, _under("m", files))
    with pytest.raises(UnsafeFile, match=f"'m/{config}' sets {key}: .*trust_remote_code"):
        detect(path, "teacher")


@pytest.mark.parametrize("name", ["../../evil", "model/../../evil", "/etc/evil", "..\\evil"])
@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_archive_members_must_stay_inside(tmp_path: Path, name: str, container: str) -> None:
    files = _hf_files() | {name: b"x"}
    path = tmp_path / "m"
    _zip(path, files) if container == "zip" else _tar(path, files)
    with pytest.raises(UnsafeFile, match=r"absolute path|points outside its folder"):
        detect(path, "teacher")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_tar_links_are_refused(tmp_path: Path, kind: bytes) -> None:
    path = tmp_path / "m.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in _hf_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("vocab.txt")
        link.type, link.linkname = kind, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(UnsafeFile, match="is a link"):
        detect(path, "teacher")


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", _hf_files())
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("vocab.txt")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeFile, match="is a link"):
        detect(path, "teacher")


def test_duplicate_zip_members_are_refused(teachers: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "dup.pt"
    path.write_bytes(teachers["sd.pt"].read_bytes())
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("sd/data.pkl", b"\x80\x02}.")
    with pytest.raises(UnsafeFile, match="twice"):
        detect(path, "teacher")


def test_archive_bombs_are_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "m.zip", _hf_files() | {"zeros.txt": bytes(2_000_000)})
    with pytest.raises(UnsafeFile, match="archive bomb"):
        detect(path, "teacher")
    with pytest.raises(UnsafeFile, match="more than the 100 allowed"):
        detect(_tar(tmp_path / "m.tgz", _hf_files()), "teacher", Limits(unpacked_bytes=100))


# --- everything else --------------------------------------------------------------------------


def _noise(n: int) -> bytes:
    return np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("purpose", ["teacher", "dataset"])
@pytest.mark.parametrize(
    "content",
    [b"", _noise(4096), b"\x89PNG\r\n\x1a\n" + _noise(256), b"\x1f\x8b" + _noise(64)],
    ids=["empty", "random", "png", "broken-gzip"],
)
def test_unknown_bytes(tmp_path: Path, purpose: Purpose, content: bytes) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(UnsupportedFormat, match="must be"):
        detect(tmp_path / "f", purpose)


def test_truncated_torch_zip(teachers: dict[str, Path], tmp_path: Path) -> None:
    data = teachers["mlp_ts.pt"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedFormat, match="truncated or corrupt"):
        detect(tmp_path / "cut.pt", "teacher")


def test_truncated_pickle_inside_a_torch_zip(teachers: dict[str, Path], tmp_path: Path) -> None:
    data_pkl = zipfile.ZipFile(teachers["sd.pt"]).read("sd/data.pkl")
    path = _rewrite_zip(teachers["sd.pt"], tmp_path / "cut.pt", {"/data.pkl": data_pkl[:-10]})
    with pytest.raises(UnsupportedFormat, match="truncated or corrupt"):
        detect(path, "teacher")


def test_clean_bare_pickles_are_unsupported(tmp_path: Path) -> None:
    torch.save(MLP().state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsupportedFormat, match="legacy"):
        detect(tmp_path / "old.pt", "teacher")
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"a": [1.0, 2.0]}))
    with pytest.raises(UnsupportedFormat, match="bare pickle"):
        detect(tmp_path / "p.pkl", "teacher")


def test_accepted_formats_sentence() -> None:
    assert accepted_formats("dataset") == "A data set must be npz, safetensors, csv or jsonl."
    assert set(ACCEPTED_FORMATS) == {"teacher", "dataset"}
    assert "torch.export (.pt2)" in accepted_formats("teacher")


def test_detection_never_imports_torch() -> None:
    code = "import sys, app.files.formats; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


# --- security review (issue 11): records loaders disagree on, code that reaches files, bounds --


def _edit_config(
    src: Path, dst: Path, kind: str, edit: Callable[[dict], None], **add: bytes
) -> Path:
    with zipfile.ZipFile(src) as zf:
        name = next(n for n in zf.namelist() if n.endswith(f"model_{kind}_config.json"))
        config = json.loads(zf.read(name))
    edit(config["config"])
    replace = {f"model_{kind}_config.json": json.dumps({"config": config}["config"]).encode()}
    return _rewrite_zip(src, dst, replace, add={f"data/{kind}/{k}": v for k, v in add.items()})


def test_pt2_record_listed_raw_and_pickled_is_refused(
    teachers: dict[str, Path], tmp_path: Path, marker: Path
) -> None:
    """One entry says weight_0 is raw bytes; a second names it with use_pickle, which makes
    torch.export.load unpickle it with weights_only=False."""
    evil = _torch_save_bytes(_payload(marker))

    def list_twice(entries: dict) -> None:
        first = next(iter(entries.values()))
        entries["evil"] = first | {"use_pickle": True, "path_name": "weight_9"}
        first["path_name"] = "weight_9"

    path = _edit_config(
        teachers["mlp.pt2"], tmp_path / "e.pt2", "weights", list_twice, weight_9=evil
    )
    with pytest.raises(UnsafeFile, match=r"weights_config\.json' stores 'evil' as a pickle"):
        detect(path, "teacher")


@pytest.mark.parametrize("path_name", ["custom_obj_0", "opaque_obj_0", "../models/model.json"])
def test_pt2_constants_that_are_not_raw_tensors_are_refused(
    teachers: dict[str, Path], tmp_path: Path, marker: Path, path_name: str
) -> None:
    def add(entries: dict) -> None:
        entries["evil"] = {"path_name": path_name, "use_pickle": False, "is_param": False}

    evil = pickle.dumps(_payload(marker), protocol=2)
    path = _edit_config(
        teachers["mlp.pt2"], tmp_path / "e.pt2", "constants", add, opaque_obj_0=evil
    )
    with pytest.raises(UnsafeFile, match="not a raw tensor record"):
        detect(path, "teacher")


def test_pt2_program_outside_the_checked_names_is_refused(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    # torch.export.load loads every record under models/ as a program, not just models/*.json.
    with zipfile.ZipFile(teachers["mlp.pt2"]) as zf:
        program = zf.read(next(n for n in zf.namelist() if n.endswith("models/model.json")))
    path = _rewrite_zip(teachers["mlp.pt2"], tmp_path / "e.pt2", {}, add={"models/x/y": program})
    with pytest.raises(UnsafeFile, match="under models/"):
        detect(path, "teacher")


def test_pt2_graph_calling_from_file_is_refused(teachers: dict[str, Path], tmp_path: Path) -> None:
    def edit(program: dict) -> None:
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.aten.from_file.default"

    path = _edit_program(teachers["mlp.pt2"], tmp_path / "e.pt2", edit)
    with pytest.raises(UnsafeFile, match=r"aten\.from_file"):
        detect(path, "teacher")


class _ReadsFiles(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file("/tmp/distill-victim", shared=True, size=4, dtype=torch.uint8)
        t.fill_(0)  # with shared=True this writes the file
        return x + t.float().sum()


class _ReadsFilesInAMethod(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def peek(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file("/etc/passwd", size=4, dtype=torch.uint8).float().sum()


class _Holds(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.net = MLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inner(x))


@pytest.mark.parametrize(
    "make",
    [_ReadsFiles, lambda: _Holds(_ReadsFiles()), _ReadsFilesInAMethod],
    ids=["forward", "submodule", "other-method"],
)
def test_torchscript_that_reaches_files_is_refused(tmp_path: Path, make: Callable) -> None:
    torch.jit.save(torch.jit.script(make()), tmp_path / "ts.pt")
    with pytest.raises(UnsafeFile, match="from_file"):
        detect(tmp_path / "ts.pt", "teacher")


@pytest.mark.parametrize(
    "line",
    [
        "ops.aten.from_file('/etc/passwd')",
        "getattr(torch, 'from_file')('/etc/passwd')",
        "x.save('/tmp/out')",
        "ops.c10d.barrier()",
        "torch.classes.dist_c10d.FileStore('/tmp/store', 1)",
    ],
)
def test_torchscript_code_written_by_hand_is_checked(
    teachers: dict[str, Path], tmp_path: Path, line: str
) -> None:
    with zipfile.ZipFile(teachers["mlp_ts.pt"]) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".py"))
        code = zf.read(name).decode()
    code = code.replace("    return ", f"    _evil = {line}\n    return ", 1)
    path = _rewrite_zip(teachers["mlp_ts.pt"], tmp_path / "e.pt", {name: code.encode()})
    with pytest.raises(UnsafeFile, match="reaches files, processes or the network"):
        detect(path, "teacher")


def test_real_torchscript_teachers_pass_the_code_check(tmp_path: Path) -> None:
    from tests.helpers.teachers import TEACHER_ARCHS
    from worker.engine.models import build_model

    for arch, shape in (("cnn", (1, 8, 8)), ("mlp", (64,))):
        torch.jit.save(
            torch.jit.script(build_model(TEACHER_ARCHS[arch], shape, 10)), tmp_path / arch
        )
        assert detect(tmp_path / arch, "teacher").format == "torchscript"


def test_safetensors_with_too_many_tensors_is_refused(tmp_path: Path) -> None:
    # 300,000 empty tensors cost 21 MB on disk and hundreds of MB once the header is parsed.
    save_file({f"t{i}": torch.zeros(0) for i in range(300_000)}, tmp_path / "many.safetensors")
    with pytest.raises(UnsupportedFormat, match="more than the 100000 tensors"):
        detect(tmp_path / "many.safetensors", "teacher")
    bounds = Limits(safetensors_header_bytes=1000)
    with pytest.raises(UnsupportedFormat, match="more than the 1000 allowed"):
        detect(tmp_path / "many.safetensors", "teacher", bounds)


@pytest.mark.parametrize("container", ["zip", "tar.gz"])
def test_hf_archive_with_python_code_is_refused(tmp_path: Path, container: str) -> None:
    files = _hf_files() | {"modeling_evil.py": b"import os\nos.system('touch /tmp/pwned')\n"}
    path = tmp_path / "m"
    _zip(path, files) if container == "zip" else _tar(path, files)
    with pytest.raises(UnsafeFile, match=r"Python code \('modeling_evil\.py'\)"):
        detect(path, "teacher")


def test_hf_archive_with_more_members_than_the_worker_takes_is_refused(tmp_path: Path) -> None:
    files = _hf_files() | {f"extra/{i}.txt": b"" for i in range(10_001)}
    with pytest.raises(UnsafeFile, match="more than the 10000 members"):
        detect(_zip(tmp_path / "m.zip", files), "teacher")


def _pickle_of_many_opcodes(n: int) -> bytes:
    return b"\x80\x02" + b"N0" * n + b"}."  # None, POP, ... then an empty dict


def test_many_small_pickles_share_one_opcode_budget(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    """Each pickle is within bounds on its own; together they pass the upload's budget."""
    extra = {f"extra_{i}.pkl": _pickle_of_many_opcodes(50_000) for i in range(5)}
    path = _rewrite_zip(teachers["sd.pt"], tmp_path / "many.pt", {}, add=extra)
    assert detect(path, "teacher", Limits(pickle_opcodes=600_000)).format == "state_dict"
    with pytest.raises(UnsafeFile, match="more than 200000 opcodes in all"):
        detect(path, "teacher", Limits(pickle_opcodes=200_000))


def test_a_small_zip_that_expands_hugely_is_refused(
    teachers: dict[str, Path], tmp_path: Path
) -> None:
    zeros = _pickle_of_many_opcodes(20_000_000)  # 40 MB that deflate squeezes to ~40 KB
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/data.pkl", zeros)
    assert (tmp_path / "bomb.pt").stat().st_size < 100_000
    with pytest.raises(UnsafeFile, match="archive bomb"):
        detect(tmp_path / "bomb.pt", "teacher")


def test_the_time_budget_is_per_upload(teachers: dict[str, Path], tmp_path: Path) -> None:
    extra = {f"extra_{i}.pkl": _pickle_of_many_opcodes(50_000) for i in range(10)}
    path = _rewrite_zip(teachers["sd.pt"], tmp_path / "slow.pt", {}, add=extra)
    with pytest.raises(UnsafeFile, match=r"took more than 0\.01 seconds"):
        detect(path, "teacher", Limits(seconds=0.01))
