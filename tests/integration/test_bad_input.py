"""Bad input of every kind: each gets its contract error body, nothing is left behind, and the
service (API and worker) stays healthy for the next good job.

Hostile files are real: pickles whose loading would run ``os.system`` or ``exec``, hidden in each
container a teacher or a data set can arrive in. Their payload would create a marker file; the
tests check it never appears, after the upload and after any job that used an accepted file.
"""

import contextlib
import copy
import io
import json
import os
import pickle
import re
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import Client, make_team
from tests.helpers.api import error_of, stored
from tests.integration import flow
from tests.integration.conftest import Digits
from worker.engine.models import build_model

pytestmark = pytest.mark.integration

DIGIT_SHAPE = (1, 8, 8)
STATE_DICT_ARCH = {"arch": "mlp", "hidden_sizes": [32]}
DELETE = object()  # a spec value meaning "leave the field out"


def post_file(team: Client, path: Path, purpose: str) -> Any:
    with path.open("rb") as f:
        return team.post("/v1/files", files={"file": (path.name, f)}, data={"purpose": purpose})


def assert_healthy(team: Client, digits: Digits) -> None:
    """Both probes answer and a small good job still succeeds end to end."""
    assert team.api.get("/healthz").status_code == 200
    ready = team.api.get("/readyz")
    assert ready.status_code == 200, ready.text
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    job = flow.submit(team, flow.spec(teacher, train, hyperparameters={"epochs": 1}))
    finished = flow.run_to_end(team, job["id"])
    assert finished["status"] == "succeeded", finished["error"]


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as f:  # a file object, or numpy appends ".npz" to the name
        np.savez(f, **arrays)
    return path


def state_dict_teacher(path: Path) -> Path:
    """A torch.save of a state dict the engine can rebuild with ``STATE_DICT_ARCH``."""
    torch.manual_seed(0)
    torch.save(build_model(STATE_DICT_ARCH, DIGIT_SHAPE, 10).state_dict(), path)
    return path


# --- malformed job specs --------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_team(admin: Client, digits: Digits) -> dict[str, Any]:
    """A team with good files that only ever sees refused submissions: it must have no jobs."""
    team = make_team(admin)
    return {
        "team": team,
        "teacher": flow.upload(team, digits.teacher, "teacher")["id"],
        "train": flow.upload(team, digits.train, "dataset")["id"],
    }


def with_value(spec: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    *parents, leaf = dotted.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return spec


BAD_SPECS = [
    # (field, value, the param the error must name)
    ("hyperparameters.epochs", 0, "hyperparameters.epochs"),
    ("hyperparameters.epochs", 1001, "hyperparameters.epochs"),
    ("hyperparameters.epochs", "ten", "hyperparameters.epochs"),
    ("hyperparameters.batch_size", 0, "hyperparameters.batch_size"),
    ("hyperparameters.learning_rate", 0, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", -1, "hyperparameters.learning_rate"),
    ("hyperparameters.optimizer", "adam9", "hyperparameters.optimizer"),
    ("hyperparameters.weight_decay", -0.1, "hyperparameters.weight_decay"),
    ("hyperparameters.temperature", 0, "hyperparameters.temperature"),
    ("hyperparameters.alpha", -0.1, "hyperparameters.alpha"),
    ("hyperparameters.alpha", 1.5, "hyperparameters.alpha"),
    ("hyperparameters.seed", -1, "hyperparameters.seed"),
    ("hyperparameters.momentum", 0.9, "hyperparameters.momentum"),  # unknown field
    ("hyperparameters.lr_schedule", "step", "hyperparameters.lr_schedule"),
    ("hyperparameters.warmup_steps", -1, "hyperparameters.warmup_steps"),
    ("hyperparameters.temperature_schedule", "cosine", "hyperparameters.temperature_schedule"),
    ("hyperparameters.temperature_end", 2.0, "hyperparameters.temperature_end"),  # constant
    ("hyperparameters.alpha_end", 0.5, "hyperparameters.alpha_end"),  # schedule is constant
    ("hyperparameters.grad_clip_norm", 0, "hyperparameters.grad_clip_norm"),
    ("hyperparameters.grad_accumulation_steps", 0, "hyperparameters.grad_accumulation_steps"),
    ("hyperparameters.grad_accumulation_steps", 1025, "hyperparameters.grad_accumulation_steps"),
    ("hyperparameters.precision", "fp8", "hyperparameters.precision"),
    (
        "hyperparameters.early_stopping",
        {"metric": "train_loss", "patience": 1},
        "hyperparameters.early_stopping.metric",
    ),
    (
        "hyperparameters.early_stopping",
        {"metric": "val_loss", "patience": 0},
        "hyperparameters.early_stopping.patience",
    ),
    (
        "hyperparameters.early_stopping",
        {"metric": "val_loss", "patience": 1, "min_delta": -0.1},
        "hyperparameters.early_stopping.min_delta",
    ),
    ("colour", "blue", "colour"),  # unknown top-level field
    ("task", "ranking", "task"),
    ("sweep", {"momentum": [0.9]}, "sweep.momentum"),  # not a sweepable hyperparameter
    ("sweep", {"temperature": []}, "sweep.temperature"),
    ("sweep", {"alpha": [0.5, 1.5]}, "sweep.alpha.1"),
    ("sweep", {"learning_rate": [0]}, "sweep.learning_rate.0"),
    ("sweep", {}, "sweep"),
    ("sweep", {"temperature": [1, 2, 4, 8, 16], "alpha": [0.1, 0.5, 0.9, 1.0]}, "sweep"),  # 20
    ("teacher", DELETE, "teacher"),
    ("data.train_file_id", DELETE, "data.train_file_id"),
    ("data.validation_split", 0.9, "data.validation_split"),
    # Inside the arch unions the param is the field's path in the body, with no union tags.
    ("student.arch", "resnet", "student.arch"),
    ("student.dropout", 1.5, "student.dropout"),
    ("teacher.arch", {"arch": "cnn", "kernel_size": 0}, "teacher.arch.kernel_size"),
    ("student", {"arch": "transformer", "hidden_size": 30, "num_heads": 4}, "student"),
    ("student", {"arch": "transformer", "num_layers": 0}, "student.num_layers"),
    ("student", {"arch": "hf", "config": {"num_hidden_layers": 2}}, "student.config"),
    (
        "student",
        {"arch": "hf", "config": {"model_type": "bert", "auto_map": {"x": "evil.Model"}}},
        "student.config",
    ),
    ("student", {"arch": "from_teacher", "layers": []}, "student.layers"),
    ("student", {"arch": "from_teacher", "layers": [2, 1]}, "student.layers"),
    ("teacher.arch", {"arch": "from_teacher", "layers": [0]}, "teacher.arch.arch"),
    ("losses", {"logits": "l1"}, "losses.logits"),
    ("losses", {"hidden": {"metric": "l1"}}, "losses.hidden.metric"),
    ("losses", {"hidden": {"weight": 0}}, "losses.hidden.weight"),
    ("losses", {"attention": {"layers": [[0]]}}, "losses.attention.layers.0.1"),
    ("data.max_length", 1, "data.max_length"),
]


@pytest.mark.parametrize(
    ("field", "value", "param"),
    BAD_SPECS,
    ids=[f"{f}={'missing' if v is DELETE else v}" for f, v, _ in BAD_SPECS],
)
def test_malformed_spec_is_422_naming_the_field(
    spec_team: dict[str, Any], field: str, value: Any, param: str
) -> None:
    team = spec_team["team"]
    good = flow.spec(spec_team["teacher"], spec_team["train"])
    response = team.post("/v1/jobs", json=with_value(good, field, value))
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("invalid_request", param), error
    assert team.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"teacher": ', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"{}", "text/plain"),
    ],
    ids=["cut-short", "not-utf8", "not-json"],
)
def test_body_that_is_not_a_json_object_is_422(
    spec_team: dict[str, Any], body: bytes, content_type: str
) -> None:
    team = spec_team["team"]
    response = team.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    error = error_of(response, 422)
    assert error["code"] == "invalid_request"
    assert error["param"] in (None, "body"), error  # not a field of the spec, nor an offset
    assert team.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ("teacher.file_id", "teacher.file_id"),
        ("data.train_file_id", "data.train_file_id"),
        ("data.validation_file_id", "data.validation_file_id"),
    ],
)
def test_unknown_file_id_is_404(spec_team: dict[str, Any], field: str, param: str) -> None:
    team = spec_team["team"]
    good = flow.spec(spec_team["teacher"], spec_team["train"])
    response = team.post("/v1/jobs", json=with_value(good, field, "file_doesnotexist"))
    error = error_of(response, 404)
    assert (error["code"], error["param"]) == ("not_found", param), error
    assert team.get("/v1/jobs").json()["data"] == []


def test_file_of_the_wrong_purpose_is_422(spec_team: dict[str, Any]) -> None:
    team, teacher, train = spec_team["team"], spec_team["teacher"], spec_team["train"]
    dataset_as_teacher = team.post("/v1/jobs", json=flow.spec(train, train))
    assert error_of(dataset_as_teacher, 422)["param"] == "teacher.file_id"
    teacher_as_data = team.post("/v1/jobs", json=flow.spec(teacher, teacher))
    assert error_of(teacher_as_data, 422)["param"] == "data.train_file_id"
    assert team.get("/v1/jobs").json()["data"] == []


def test_state_dict_teacher_needs_an_arch(spec_team: dict[str, Any], tmp_path: Path) -> None:
    team = spec_team["team"]
    uploaded = flow.upload(team, state_dict_teacher(tmp_path / "weights.pt"), "teacher")
    assert uploaded["format"] == "state_dict"
    response = team.post("/v1/jobs", json=flow.spec(uploaded["id"], spec_team["train"]))
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("invalid_request", "teacher.arch"), error
    assert "teacher.arch" in error["message"]
    assert team.get("/v1/jobs").json()["data"] == []


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        (
            {"student": {"arch": "hf", "config": {"model_type": "bert"}}},
            "unsupported_arch",
            "student.arch",
        ),
        ({"student": {"arch": "from_teacher", "layers": [0]}}, "unsupported_arch", "student.arch"),
        ({"losses": {"hidden": {}}}, "unsupported_loss", "losses.hidden"),
        ({"losses": {"attention": {}}}, "unsupported_loss", "losses.attention"),
    ],
    ids=["hf-student", "from-teacher", "hidden", "attention"],
)
def test_what_a_torchscript_teacher_cannot_give_is_refused_at_submit(
    spec_team: dict[str, Any], change: dict, code: str, param: str
) -> None:
    """A TorchScript teacher has no tokenizer and shows no layers."""
    team = spec_team["team"]
    body = flow.spec(spec_team["teacher"], spec_team["train"])
    for field, value in change.items():
        body = with_value(body, field, value)
    response = team.post("/v1/jobs", json=body)
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == (code, param), error
    assert team.get("/v1/jobs").json()["data"] == []


def test_text_data_needs_a_teacher_with_a_tokenizer(
    spec_team: dict[str, Any], tmp_path: Path
) -> None:
    team = spec_team["team"]
    text = tmp_path / "reviews.jsonl"
    text.write_text('{"text": "a fine film", "label": 1}\n{"text": "dull", "label": 0}\n')
    data = flow.upload(team, text, "dataset")
    assert data["format"] == "jsonl"
    response = team.post("/v1/jobs", json=flow.spec(spec_team["teacher"], data["id"]))
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsupported_data", "data.train_file_id"), error
    assert "reads tensors" in error["message"]
    assert team.get("/v1/jobs").json()["data"] == []


# --- data the teacher or the loss cannot use ------------------------------------------------


@pytest.mark.usefixtures("worker_process")
def test_unlabelled_data_needs_alpha_1(team: Client, digits: Digits, tmp_path: Path) -> None:
    with np.load(digits.train) as train:
        unlabelled = save_npz(tmp_path / "unlabelled.npz", x=train["x"])
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    data = flow.upload(team, unlabelled, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]

    for hyperparameters in ({"epochs": 1}, {"epochs": 1, "alpha": 0.99}):  # 0.5 by default
        mixed = team.post(
            "/v1/jobs", json=flow.spec(teacher, data, validation, hyperparameters=hyperparameters)
        )
        error = error_of(mixed, 422)
        assert (error["code"], error["param"]) == ("labels_required", "hyperparameters.alpha")
    baseline = team.post(
        "/v1/jobs",
        json=flow.spec(teacher, data, validation, hyperparameters={"alpha": 1.0}, baseline=True),
    )
    assert error_of(baseline, 422)["code"] == "labels_required"
    assert team.get("/v1/jobs").json()["data"] == []

    spec = flow.spec(teacher, data, validation, hyperparameters={"epochs": 2, "alpha": 1.0})
    job = flow.run_to_end(team, flow.submit(team, spec)["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["spec"]["hyperparameters"]["alpha"] == 1.0
    # Taught by the teacher alone, it still learns digits (10 classes: chance is 0.1).
    assert job["metrics"]["student_accuracy"] > 0.3, job["metrics"]


@pytest.mark.usefixtures("worker_process")
def test_data_that_does_not_fit_the_teacher_fails_the_job(
    team: Client, digits: Digits, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    flat = save_npz(
        tmp_path / "flat.npz",
        x=rng.random((200, 10), dtype=np.float32),
        y=rng.integers(0, 10, 200).astype(np.int64),
    )
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    data = flow.upload(team, flat, "dataset")["id"]
    job = flow.run_to_end(team, flow.submit(team, flow.spec(teacher, data))["id"])

    assert job["status"] == "failed"
    assert job["error"]["code"] == "shape_mismatch", job["error"]
    assert re.search(r"\(\d+, 10\)", job["error"]["message"]), job["error"]  # names the shape
    assert not job["metrics"]
    assert team.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"] == []
    assert_healthy(team, digits)


# --- truncated checkpoints ------------------------------------------------------------------


def _truncated(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


@pytest.mark.parametrize("kind", ["state_dict", "torchscript"])
@pytest.mark.usefixtures("worker_process")
def test_truncated_checkpoint_is_refused_or_fails_cleanly(
    team: Client, digits: Digits, tmp_path: Path, kind: str
) -> None:
    full = state_dict_teacher(tmp_path / "full.pt") if kind == "state_dict" else digits.teacher
    half = _truncated(full, tmp_path / f"half-{kind}.pt")
    before = stored(team)
    response = post_file(team, half, "teacher")

    if response.status_code == 201:  # then the job must fail, saying why
        train = flow.upload(team, digits.train, "dataset")["id"]
        arch = STATE_DICT_ARCH if kind == "state_dict" else None
        spec = flow.spec(response.json()["id"], train, teacher={"arch": arch})
        job = flow.run_to_end(team, flow.submit(team, spec)["id"])
        assert job["status"] == "failed"
        assert job["error"]["code"] == "teacher_load_failed", job["error"]
    else:
        assert error_of(response, 422)["code"] == "unsupported_format"
        assert stored(team) == before
    assert_healthy(team, digits)


# --- files whose loading would run code -----------------------------------------------------


@dataclass
class Payload:
    """Pickles to an ``os.system`` or ``exec`` call that creates ``marker``."""

    marker: Path
    how: str

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def _torch_save_bytes(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def _rewrite_zip(source: Path, dest: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """Copy a zip archive member by member, passing each through ``edit``."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        names = zin.namelist()
        for name in names:
            zout.writestr(name, edit(name, zin.read(name)))
    return dest


@dataclass
class Bases:
    """Real, harmless files that the hostile ones are made from."""

    torchscript: Path
    torch_export: Path


@pytest.fixture(scope="module")
def bases(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Bases:
    folder = tmp_path_factory.mktemp("bases")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    example = torch.zeros((4, *DIGIT_SHAPE))
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(folder / "model.pt2"))
    return Bases(torchscript=digits.teacher, torch_export=folder / "model.pt2")


def bare_pickle(payload: Payload, bases: Bases, dest: Path) -> Path:
    dest.write_bytes(pickle.dumps({"w": payload}))
    return dest


def torch_save_zip(payload: Payload, bases: Bases, dest: Path) -> Path:
    dest.write_bytes(_torch_save_bytes({"w": payload}))
    return dest


def torch_save_legacy(payload: Payload, bases: Bases, dest: Path) -> Path:
    dest.write_bytes(_torch_save_bytes({"w": payload}, _use_new_zipfile_serialization=False))
    return dest


def pt2_sample_inputs(payload: Payload, bases: Bases, dest: Path) -> Path:
    """torch.export.load unpickles the sample inputs, retrying with weights_only=False."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/sample_inputs/model.pt"):
            return _torch_save_bytes(((payload,), {}))
        return data

    return _rewrite_zip(bases.torch_export, dest, edit)


def pt2_pickled_weight(payload: Payload, bases: Bases, dest: Path) -> Path:
    """A weight marked ``use_pickle``, which torch.export.load reads with weights_only=False."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = meta["path_name"] == "weight_0"
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return _torch_save_bytes(payload)
        return data

    return _rewrite_zip(bases.torch_export, dest, edit)


def pt2_record_listed_twice(payload: Payload, bases: Bases, dest: Path) -> Path:
    """The security review's bypass: weight_0 stays listed as raw bytes (which an earlier check
    took as proof that it needed no scan), and a second entry names the same record with
    ``use_pickle``, which torch.export.load unpickles with weights_only=False."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            raw = next(m for m in config["config"].values() if m["path_name"] == "weight_0")
            config["config"] = {"evil": raw | {"use_pickle": True}, **config["config"]}
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            pickled = _torch_save_bytes(payload)  # padded: the raw reading wants whole floats
            return pickled + bytes(-len(pickled) % 4)
        return data

    return _rewrite_zip(bases.torch_export, dest, edit)


def torchscript_member(member: str) -> Callable[[Payload, Bases, Path], Path]:
    def build(payload: Payload, bases: Bases, dest: Path) -> Path:
        def edit(name: str, data: bytes) -> bytes:
            return pickle.dumps(payload, protocol=2) if name.endswith(f"/{member}") else data

        return _rewrite_zip(bases.torchscript, dest, edit)

    build.__name__ = f"torchscript_{member.replace('.', '_')}"
    return build


def npz_object_array(payload: Payload, bases: Bases, dest: Path) -> Path:
    x = np.empty(2, dtype=object)
    x[0], x[1] = payload, payload
    with dest.open("wb") as f:
        np.savez(f, x=x, y=np.zeros(2, np.int64))  # allow_pickle is on when saving
    return dest


HF_CONFIG = {"model_type": "bert", "num_hidden_layers": 1, "hidden_size": 8, "vocab_size": 16}


def _hf_files(payload: Payload) -> dict[str, bytes]:
    """A small Hugging Face model directory whose weights file unpickles the payload."""
    return {
        "model/config.json": json.dumps(HF_CONFIG).encode(),
        "model/pytorch_model.bin": _torch_save_bytes({"w": payload}),
        "model/vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n",
    }


def hf_archive_zip(payload: Payload, bases: Bases, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as archive:
        for name, data in _hf_files(payload).items():
            archive.writestr(name, data)
    return dest


def hf_archive_tar(payload: Payload, bases: Bases, dest: Path) -> Path:
    """Safe weights, but a training_args.bin pickle beside them, as the Trainer writes."""
    from safetensors.torch import save

    files = _hf_files(payload)
    files["model/model.safetensors"] = save({"w": torch.zeros(2)})
    files["model/training_args.bin"] = files.pop("model/pytorch_model.bin")
    with tarfile.open(dest, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return dest


def hf_archive_remote_code(payload: Payload, bases: Bases, dest: Path) -> Path:
    """Safe weights, but a config that asks transformers to import the archive's own code."""
    from safetensors.torch import save

    config = {**HF_CONFIG, "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    code = f"import os\nos.system('touch {payload.marker}')\n"
    with zipfile.ZipFile(dest, "w") as archive:
        archive.writestr("model/config.json", json.dumps(config))
        archive.writestr("model/model.safetensors", save({"w": torch.zeros(2)}))
        archive.writestr("model/modeling_evil.py", code)
    return dest


HOSTILE = [
    (bare_pickle, "teacher"),
    (bare_pickle, "dataset"),
    (torch_save_zip, "teacher"),
    (torch_save_legacy, "teacher"),
    (pt2_sample_inputs, "teacher"),
    (pt2_pickled_weight, "teacher"),
    (pt2_record_listed_twice, "teacher"),
    (torchscript_member("constants.pkl"), "teacher"),
    (torchscript_member("data.pkl"), "teacher"),
    (npz_object_array, "dataset"),
    (npz_object_array, "teacher"),
    (hf_archive_zip, "teacher"),
    (hf_archive_tar, "teacher"),
    (hf_archive_remote_code, "teacher"),
]


def _try_in_a_job(team: Client, digits: Digits, file: dict[str, Any]) -> None:
    """Use an accepted hostile file the way a user would, to see whether that runs it."""
    if file["purpose"] == "teacher":
        teacher, train = file["id"], flow.upload(team, digits.train, "dataset")["id"]
    else:
        teacher, train = flow.upload(team, digits.teacher, "teacher")["id"], file["id"]
    spec = flow.spec(
        teacher, train, teacher={"arch": STATE_DICT_ARCH}, hyperparameters={"epochs": 1}
    )
    submitted = team.post("/v1/jobs", json=spec)
    if submitted.status_code == 201:
        flow.run_to_end(team, submitted.json()["id"])


@pytest.mark.parametrize("how", ["system", "exec"])
@pytest.mark.parametrize(
    ("build", "purpose"), HOSTILE, ids=[f"{b.__name__}-as-{p}" for b, p in HOSTILE]
)
def test_file_that_would_run_code_is_refused_and_never_run(
    request: pytest.FixtureRequest,
    team: Client,
    digits: Digits,
    bases: Bases,
    tmp_path: Path,
    build: Callable[[Payload, Bases, Path], Path],
    purpose: str,
    how: str,
) -> None:
    marker = tmp_path / "pwned"
    hostile = build(Payload(marker, how), bases, tmp_path / "hostile.bin")
    before = stored(team)

    response = post_file(team, hostile, purpose)
    assert not marker.exists(), "the upload ran the file's code"
    if response.status_code == 201:
        request.getfixturevalue("worker_process")
        _try_in_a_job(team, digits, response.json())
        assert not marker.exists(), "a job ran the file's code"
    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsafe_file", "file"), error
    assert stored(team) == before


def test_hostile_builders_really_run_code(bases: Bases, tmp_path: Path) -> None:
    """The hostile files above are live: the plain loaders they target do run their payload."""
    loads: list[tuple[Callable[[Payload, Bases, Path], Path], Callable[[Path], Any]]] = [
        (bare_pickle, lambda p: pickle.loads(p.read_bytes())),
        (torch_save_zip, lambda p: torch.load(p, weights_only=False)),
        (torch_save_legacy, lambda p: torch.load(p, weights_only=False)),
        (npz_object_array, lambda p: np.load(p, allow_pickle=True)["x"]),
        (pt2_sample_inputs, lambda p: torch.export.load(str(p))),
        (pt2_pickled_weight, lambda p: torch.export.load(str(p))),
        (pt2_record_listed_twice, lambda p: torch.export.load(str(p))),
    ]
    for build, load in loads:
        for how in ("system", "exec"):
            marker = tmp_path / f"{build.__name__}-{how}"
            path = build(Payload(marker, how), bases, tmp_path / f"{build.__name__}.bin")
            with contextlib.suppress(Exception):  # the payload runs before any check fails
                load(path)
            assert marker.exists(), (build.__name__, how)


# --- routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("get", "/v1/nope", 404, "not_found"),
        ("get", "/nope", 404, "not_found"),
        ("get", "/v1/jobs/job_x/nope", 404, "not_found"),
        ("post", "/v1/files/file_x/content", 405, "method_not_allowed"),
        ("put", "/v1/jobs", 405, "method_not_allowed"),
        ("delete", "/v1/jobs/job_x", 405, "method_not_allowed"),
        ("post", "/healthz", 405, "method_not_allowed"),
    ],
)
def test_unknown_route_or_method_gets_the_error_body(
    team: Client, method: str, path: str, status: int, code: str
) -> None:
    error = error_of(getattr(team, method)(path), status)
    assert error["code"] == code
