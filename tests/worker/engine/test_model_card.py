"""model_card.md and curves.svg on every kind of job the engine runs: image and tabular
classification, regression, a sweep and text. Each card must carry the job's own numbers (from
metrics.json and the epoch-end points the job reported) and its full spec; each chart must be
real SVG with one point per epoch on every curve."""

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers.regression import train_diabetes_teacher
from tests.helpers.teachers import Digits, engine_job, job_spec, save_npz, save_teacher
from tests.helpers.text import SMALL_BERT, write_jsonl
from tests.worker.engine.conftest import Recorder
from worker.engine import EngineResult, JobCancelled, run_job

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SVG = "{http://www.w3.org/2000/svg}"
MLP = {"arch": "mlp", "hidden_sizes": [32], "activation": "relu", "dropout": 0.0}
FILE_NAMES = {"teacher": "digits-teacher.pt", "train": "train.npz", "validation": "val.npz"}


def _run(job) -> tuple[EngineResult, Recorder, str, Path]:
    recorder = Recorder()
    result = run_job(job, recorder)
    out = job.output_dir
    return result, recorder, (out / "model_card.md").read_text(), out


def _spec_block(card: str) -> dict:
    (block,) = re.findall(r"```json\n(.*?)\n```", card, flags=re.S)
    return json.loads(block)


def _polylines(svg: Path) -> dict[str, list[list[tuple[float, float]]]]:
    """Series name -> the points of its polyline in each panel, from the parsed SVG."""
    root = ET.fromstring(svg.read_text())
    assert root.tag == f"{SVG}svg"
    lines: dict[str, list[list[tuple[float, float]]]] = {}
    for line in root.iter(f"{SVG}polyline"):
        points = [tuple(map(float, p.split(","))) for p in line.get("points", "").split()]
        lines.setdefault(line.get("class", ""), []).append(points)
    return lines


def _epoch_points(recorder: Recorder, run: int | None = None) -> list[dict]:
    """The student's epoch-end points. With progress reports at epoch ends only, each carries
    the epoch's mean train_loss."""
    points = [p for p in recorder.points if "val_loss" in p]
    return [p for p in points if run is None or p.get("run") == run]


def _assert_curves_table(card: str, points: list[dict], metric: str, fmt: str) -> None:
    for epoch, point in enumerate(points, 1):
        row = f"| {epoch} | {point['train_loss']:.4g} | {format(point[metric], fmt)} |"
        assert row in card, row


def test_an_image_classification_card_has_the_jobs_numbers_spec_and_curves(
    cnn_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(student=MLP, baseline=True, epochs=3, learning_rate=0.005)
    job = cnn_digits.job(tmp_path, spec, job_id="job_card", file_names=FILE_NAMES)

    result, recorder, card, out = _run(job)

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"model_card.md", "curves.svg"} <= {p.name for p in result.artifacts}
    assert card.startswith("# Model card: job_card")
    for name in ("teacher_accuracy", "student_accuracy", "baseline_accuracy", "agreement"):
        assert f"{metrics[name]:.2%}" in card, name
    assert f"{metrics['kl_divergence']:.4g}" in card
    assert f"| parameters | {metrics['teacher_params']:,} | {metrics['student_params']:,} |" in card
    assert f"{metrics['compression_ratio']:.1f}x" in card and f"{metrics['speedup']:.1f}x" in card
    assert f"{metrics['teacher_latency_ms']:.3f} ms" in card
    assert f"{metrics['student_latency_ms']:.3f} ms" in card
    assert "`digits-teacher.pt` (`file_teacher`), `torchscript`" in card
    trained = cnn_digits.trained
    assert f"`train.npz` (`file_train`), {len(trained.x_train):,} rows" in card
    assert f"`val.npz`, {len(trained.x_val):,} rows" in card and "(batch, 1, 8, 8)" in card
    assert _spec_block(card) == spec.model_dump(mode="json")
    assert 'torch.jit.load("student.pt")' in card and "validation data" in card
    assert "batch 1" in card  # the latency caveat

    points = _epoch_points(recorder)
    assert len(points) == 3
    _assert_curves_table(card, points, "val_accuracy", ".2%")
    lines = _polylines(out / "curves.svg")
    assert set(lines) == {"student", "baseline"}
    # two panels (train loss, validation accuracy), one point per epoch on every curve
    assert [len(panel) for panel in lines["student"]] == [3, 3]
    assert [len(panel) for panel in lines["baseline"]] == [3, 3]
    # the best epoch is drawn highest (SVG y grows downwards), the worst lowest
    accuracies = [p["val_accuracy"] for p in points]
    ys = [y for _, y in lines["student"][1]]
    assert ys[accuracies.index(max(accuracies))] == min(ys)
    assert ys[accuracies.index(min(accuracies))] == max(ys)


def test_a_tabular_card_without_a_baseline_says_so(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(student=MLP, epochs=2, name="tabular digits")

    _, recorder, card, out = _run(mlp_digits.job(tmp_path, spec, job_id="job_tab"))

    metrics = json.loads((out / "metrics.json").read_text())
    assert card.startswith("# Model card: tabular digits (`job_tab`)")
    assert "(batch, 64)" in card and "baseline" not in card.split("## Results")[1].split("\n")[2]
    assert (
        f"| accuracy | {metrics['teacher_accuracy']:.2%} | {metrics['student_accuracy']:.2%} |"
        in card
    )
    assert '"baseline": true' in card  # the caveat that suggests one
    _assert_curves_table(card, _epoch_points(recorder), "val_accuracy", ".2%")
    assert [len(p) for p in _polylines(out / "curves.svg")["student"]] == [2, 2]


def test_a_regression_card_reports_r2_and_mse(tmp_path: Path) -> None:
    trained = train_diabetes_teacher()
    teacher = save_teacher(trained.model, tmp_path / "teacher.pt", "torchscript")
    train = save_npz(tmp_path / "train.npz", trained.x_train, trained.y_train)
    val = save_npz(tmp_path / "val.npz", trained.x_val, trained.y_val)
    student = {"arch": "mlp", "hidden_sizes": [8], "activation": "relu", "dropout": 0.0}
    spec = job_spec(
        student=student, baseline=True, task="regression", epochs=3, batch_size=32,
        learning_rate=0.01,
    )  # fmt: skip

    _, recorder, card, out = _run(engine_job(tmp_path, spec, teacher, train, val))

    metrics = json.loads((out / "metrics.json").read_text())
    r2_row = (
        f"| R² | {metrics['teacher_r2']:.4g} | {metrics['student_r2']:.4g} | "
        f"{metrics['baseline_r2']:.4g} |"
    )
    assert r2_row in card
    assert f"| MSE | {metrics['teacher_mse']:.4g} | {metrics['student_mse']:.4g} |" in card
    assert f"{metrics['agreement_mse']:.4g}" in card and "accuracy" not in card
    assert _spec_block(card)["task"] == "regression"
    _assert_curves_table(card, _epoch_points(recorder), "val_mse", ".4g")
    lines = _polylines(out / "curves.svg")
    assert [len(p) for p in lines["student"]] == [3, 3]
    assert [len(p) for p in lines["baseline"]] == [3, 3]


def test_a_sweep_card_shows_every_run_and_the_chosen_runs_curve(
    mlp_digits: Digits, tmp_path: Path
) -> None:
    spec = job_spec(student=MLP, epochs=2, sweep={"temperature": [2.0, 8.0]})

    _, recorder, card, out = _run(mlp_digits.job(tmp_path, spec))

    metrics = json.loads((out / "metrics.json").read_text())
    chosen = next(i for i, row in enumerate(metrics["sweep"]) if row["chosen"])
    assert "Sweep: 2 runs" in card
    for i, row in enumerate(metrics["sweep"]):
        assert f"| {i} | {row['temperature']:.4g} |" in card
    _assert_curves_table(card, _epoch_points(recorder, run=chosen), "val_accuracy", ".2%")
    assert [len(p) for p in _polylines(out / "curves.svg")["student"]] == [2, 2]


def test_a_text_card_shows_how_to_load_the_student_with_transformers(
    trained, teacher_zip: Path, tmp_path: Path
) -> None:
    _, _, texts, labels = trained
    train = write_jsonl(tmp_path / "train.jsonl", texts[:300], labels[:300])
    val = write_jsonl(tmp_path / "val.jsonl", texts[300:400], labels[300:400])
    spec = job_spec(student=SMALL_BERT, data={"max_length": 32}, epochs=2, batch_size=32)
    job = engine_job(tmp_path, spec, teacher_zip, train, val, teacher_format="hf_archive",
                     train_format="jsonl", validation_format="jsonl")  # fmt: skip

    _, recorder, card, out = _run(job)

    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['student_accuracy']:.2%}" in card
    assert "AutoModelForSequenceClassification" in card and 'ZipFile("student_hf.zip")' in card
    assert 'student(batch["input_ids"], batch["attention_mask"])' in card
    assert "`hf_archive`" in card and "on text" in card
    assert _spec_block(card) == spec.model_dump(mode="json")
    _assert_curves_table(card, _epoch_points(recorder), "val_accuracy", ".2%")
    assert [len(p) for p in _polylines(out / "curves.svg")["student"]] == [2, 2]


def test_a_resumed_jobs_card_has_every_epoch(mlp_digits: Digits, tmp_path: Path) -> None:
    spec = job_spec(student=MLP, epochs=3)
    first = Recorder(stop_after=("student", 1))
    with pytest.raises(JobCancelled):
        run_job(mlp_digits.job(tmp_path, spec), first)
    second = Recorder()

    run_job(mlp_digits.job(tmp_path, spec), second)

    card = (tmp_path / "out/model_card.md").read_text()
    points = _epoch_points(first) + _epoch_points(second)
    assert [p["epoch"] for p in points] == [1, 2, 3]
    _assert_curves_table(card, points, "val_accuracy", ".2%")
    assert [len(p) for p in _polylines(tmp_path / "out/curves.svg")["student"]] == [3, 3]
