"""Text jobs through the whole engine: a Hugging Face teacher archive and jsonl reviews in,
students (hf, transformer, from_teacher) with the contract's text artifacts out, layer matching
on transformers, and resume."""

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from jobspec import JobSpec
from tests.helpers.teachers import engine_job, job_spec
from tests.helpers.text import SMALL_BERT, write_jsonl
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineResult, JobCancelled, run_job, text
from worker.engine.artifacts import load_student
from worker.engine.errors import UnsupportedInput

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def reviews(trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Train, validation and unlabelled jsonl files cut from the teacher's 1,000 reviews."""
    _, _, texts, labels = trained
    folder = tmp_path_factory.mktemp("reviews")
    return (
        write_jsonl(folder / "train.jsonl", texts[:600], labels[:600]),
        write_jsonl(folder / "val.jsonl", texts[600:800], labels[600:800]),
        write_jsonl(folder / "unlabelled.jsonl", texts[:600]),
    )


def _job(tmp_path: Path, teacher_zip: Path, reviews, spec: JobSpec, **overrides):
    train, val, _ = reviews
    fields = {"teacher_format": "hf_archive", "train_format": "jsonl", "validation_format": "jsonl"}
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"max_length": 48})})
    return engine_job(tmp_path, spec, teacher_zip, train, val, **(fields | overrides))


def _spec(student: dict, losses: dict | None = None, **hp) -> JobSpec:
    return job_spec(student=student, losses=losses, **({"epochs": 2, "batch_size": 32} | hp))


def _scored_by_student_pt(result: EngineResult, out: Path, tokenizer, texts: list[str]) -> None:
    """student.pt takes (input_ids, attention_mask), at any batch size and length, and agrees
    with the weights in student.safetensors."""
    x = text.tokenize(texts, tokenizer, max_length=48)
    ids, mask = text.unpack(x)
    deployed = torch.jit.load(str(out / "student.pt"))
    with torch.no_grad():
        torch.testing.assert_close(deployed(ids, mask), load_student(out)(x), atol=1e-5, rtol=1e-4)


def test_an_hf_student_distils_a_bert_teacher_with_text_artifacts(
    trained, teacher_zip: Path, reviews, tmp_path: Path
) -> None:
    _, tokenizer, texts, _ = trained

    result = run_job(_job(tmp_path, teacher_zip, reviews, _spec(SMALL_BERT, learning_rate=0.003)))

    out = tmp_path / "out"
    names = {p.name for p in result.artifacts}
    assert {"student.pt", "student_hf.zip", "student.safetensors", "student.json"} <= names
    metrics = result.metrics
    assert metrics["teacher_params"] > metrics["student_params"]
    assert 0.5 <= metrics["agreement"] <= 1.0 and metrics["student_accuracy"] is not None
    _scored_by_student_pt(result, out, tokenizer, texts[800:803])
    _scored_by_student_pt(result, out, tokenizer, texts[900:907])
    info = json.loads((out / "student.json").read_text())
    assert info["arch"]["arch"] == "hf"
    assert info["arch"]["config"]["num_hidden_layers"] == 2
    assert info["arch"]["config"]["vocab_size"] == len(tokenizer)


def test_student_hf_zip_loads_with_transformers_alone(
    trained, teacher_zip: Path, reviews, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _, _, texts, _ = trained
    run_job(_job(tmp_path, teacher_zip, reviews, _spec({"arch": "transformer", "hidden_size": 32})))

    with zipfile.ZipFile(tmp_path / "out" / "student_hf.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    folder = next(p.parent for p in (tmp_path / "unzipped").rglob("config.json"))
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = tokenizer(
        texts[:4], padding=True, truncation=True, max_length=48, return_tensors="pt"
    )
    deployed = torch.jit.load(str(tmp_path / "out" / "student.pt"))
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(**encoded).logits,
            deployed(encoded["input_ids"], encoded["attention_mask"]),
            atol=1e-5,
            rtol=1e-4,
        )


def test_a_distilbert_style_student_keeps_the_teachers_layers(
    trained, teacher_zip: Path, reviews, tmp_path: Path
) -> None:
    """from_teacher with half the layers, hidden-state and attention matching on the proposed
    pairing: the job logs the pairing, and the student stays close to its teacher."""
    losses = {
        "logits": "kl",
        "hidden": {"weight": 1.0, "metric": "cosine", "layers": None},
        "attention": {"weight": 1.0, "layers": None},
    }
    spec = _spec(
        {"arch": "from_teacher", "layers": [0, 2]}, losses=losses, alpha=0.9, temperature=2.0
    )
    recorder = Recorder()

    result = run_job(_job(tmp_path, teacher_zip, reviews, spec), recorder)

    assert result.metrics["layer_pairs"] == {
        "hidden": [[0, 1], [1, 3]],
        "attention": [[0, 1], [1, 3]],
    }
    assert result.metrics["compression_ratio"] > 1.2
    assert result.metrics["agreement"] >= 0.8
    assert result.metrics["student_accuracy"] >= 0.9 * result.metrics["teacher_accuracy"]
    config = json.loads((tmp_path / "out" / "student.json").read_text())["arch"]["config"]
    assert config["num_hidden_layers"] == 2 and config["attention_probs_dropout_prob"] == 0.0
    pairing = next(m for m in recorder.messages("info") if m.startswith("Layer matching"))
    assert "attention kl: student layer 1 (B, 2, 48, 48) -> teacher layer 3 (B, 2, 48, 48)" in (
        pairing
    )
    points = [p for p in recorder.points if p.get("attention_loss") is not None]
    assert points and all(p["hidden_loss"] is not None for p in points)


def test_text_from_unlabelled_reviews_and_resume(
    trained, teacher_zip: Path, reviews, tmp_path: Path
) -> None:
    """alpha 1 on unlabelled text, stopped after an epoch and resumed: the same student as an
    uninterrupted run, byte for byte."""
    _, _, unlabelled = reviews
    spec = _spec(SMALL_BERT, alpha=1.0, epochs=2)

    whole = run_job(_job(tmp_path / "whole", teacher_zip, reviews, spec, train_path=unlabelled))
    with pytest.raises(JobCancelled):
        run_job(
            _job(tmp_path / "resumed", teacher_zip, reviews, spec, train_path=unlabelled),
            Recorder(stop_after=("student", 1)),
        )
    resumed = run_job(_job(tmp_path / "resumed", teacher_zip, reviews, spec, train_path=unlabelled))

    assert (tmp_path / "whole/out/student.safetensors").read_bytes() == (
        tmp_path / "resumed/out/student.safetensors"
    ).read_bytes()
    assert resumed.metrics["agreement"] == whole.metrics["agreement"]


def test_a_tensor_student_cannot_read_text(teacher_zip: Path, reviews, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput, match="cannot read text") as info:
        run_job(_job(tmp_path, teacher_zip, reviews, _spec({"arch": "mlp"})))
    assert info.value.code == "unsupported_arch"
