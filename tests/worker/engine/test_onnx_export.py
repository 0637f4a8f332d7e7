"""``"export": ["onnx"]``: student.onnx for mlp, cnn and text students, run in onnxruntime on
real inputs at batch sizes 1 and more, against the TorchScript student.pt; a worker without the
onnx packages refuses the job before training; a model that does not export leaves no file."""

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from jobspec import JobSpec
from tests.helpers.teachers import Digits, engine_job, job_spec
from tests.helpers.text import SMALL_BERT, write_jsonl
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineError, run_job, text
from worker.engine.onnx_export import ExportFailed, export_tensor_student

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STUDENTS = {
    "mlp": {"arch": "mlp", "hidden_sizes": [32], "activation": "gelu", "dropout": 0.1},
    "cnn": {"arch": "cnn", "channels": [8], "kernel_size": 3, "hidden_sizes": [16],
            "activation": "relu", "dropout": 0.0},
}  # fmt: skip


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_spec(student: dict, data: dict | None = None, **hp) -> JobSpec:
    return job_spec(student=student, data=data, export=["onnx"], **({"epochs": 1} | hp))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_student_onnx_matches_student_pt_at_every_batch_size(
    cnn_digits: Digits, tmp_path: Path, kind: str
) -> None:
    recorder = Recorder()
    result = run_job(cnn_digits.job(tmp_path, _onnx_spec(STUDENTS[kind])), recorder)

    out = tmp_path / "out"
    assert "student.onnx" in {p.name for p in result.artifacts}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    session = _session(out / "student.onnx")
    (x_input,) = session.get_inputs()
    assert x_input.name == "x" and isinstance(x_input.shape[0], str)  # a dynamic batch axis
    deployed = torch.jit.load(str(out / "student.pt"))
    x_val = torch.from_numpy(cnn_digits.trained.x_val)
    for rows in (1, 7, len(x_val)):
        x = x_val[:rows]
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            expected = deployed(x)
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)
    assert any("student.onnx" in m and "matches" in m for m in recorder.messages("info"))
    card = (out / "model_card.md").read_text()
    assert 'onnxruntime.InferenceSession("student.onnx")' in card


def test_a_text_student_exports_with_ids_and_mask(
    trained, teacher_zip: Path, tmp_path: Path
) -> None:
    _, tokenizer, texts, labels = trained
    train = write_jsonl(tmp_path / "train.jsonl", texts[:200], labels[:200])
    val = write_jsonl(tmp_path / "val.jsonl", texts[200:300], labels[200:300])
    spec = _onnx_spec(SMALL_BERT, data={"max_length": 32}, batch_size=32)
    job = engine_job(tmp_path, spec, teacher_zip, train, val, teacher_format="hf_archive",
                     train_format="jsonl", validation_format="jsonl")  # fmt: skip

    result = run_job(job)

    out = tmp_path / "out"
    assert "student.onnx" in {p.name for p in result.artifacts}
    session = _session(out / "student.onnx")
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    deployed = torch.jit.load(str(out / "student.pt"))
    # batch sizes 1 and 5, and lengths the export never saw (the reviews pad to their longest)
    for batch in (texts[900:901], texts[900:905]):
        ids, mask = text.unpack(text.tokenize(batch, tokenizer, max_length=20))
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            expected = deployed(ids, mask)
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


def test_a_worker_without_onnxruntime_refuses_the_job_before_training(
    mlp_digits: Digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what import sees when it is absent
    recorder = Recorder()

    with pytest.raises(EngineError) as failure:
        run_job(mlp_digits.job(tmp_path, _onnx_spec(STUDENTS["mlp"])), recorder)

    assert failure.value.code == "export_unavailable"
    assert "onnxruntime" in failure.value.message and "distillery[onnx]" in failure.value.message
    assert recorder.progress == [] and recorder.checkpoints == []
    assert not (tmp_path / "out").exists()


class _BatchDependent(nn.Module):
    """A model whose graph depends on the batch size, so no export holds for every batch: the
    new exporter refuses the dynamic axis, and the legacy tracer bakes in the traced branch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            return self.linear(x) * 2
        return self.linear(x)


def test_a_model_that_does_not_export_leaves_no_file(tmp_path: Path) -> None:
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32))

    with pytest.raises(ExportFailed) as failure:
        export_tensor_student(tmp_path, _BatchDependent().eval(), x)

    assert failure.value.code == "export_failed"
    assert "dynamo" in failure.value.message and "torchscript" in failure.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_transformer_student_on_a_table_exports(mlp_digits: Digits, tmp_path: Path) -> None:
    student = {"arch": "transformer", "num_layers": 1, "hidden_size": 16, "num_heads": 2}
    spec = _onnx_spec(student | {"intermediate_size": 32, "dropout": 0.0})

    run_job(mlp_digits.job(tmp_path, spec))

    out = tmp_path / "out"
    session = _session(out / "student.onnx")
    deployed = torch.jit.load(str(out / "student.pt"))
    for rows in (1, 3):
        x = torch.from_numpy(mlp_digits.trained.x_val[:rows])
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), deployed(x), rtol=1e-4, atol=1e-5)
