"""A job with ``"export": ["onnx"]`` through the API and a real worker: student.onnx and the
model card are listed artifacts with their sha256, and what downloads runs."""

import hashlib
import json
import re

import numpy as np
import onnxruntime
import pytest

from tests.conftest import Client
from tests.integration import flow
from tests.integration.conftest import Digits

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker_process")]


def test_onnx_export_and_model_card_through_the_api(team: Client, digits: Digits, tmp_path) -> None:
    teacher = flow.upload(team, digits.teacher, "teacher")["id"]
    train = flow.upload(team, digits.train, "dataset")["id"]
    validation = flow.upload(team, digits.validation, "dataset")["id"]
    submitted = flow.submit(team, flow.spec(teacher, train, validation, export=["onnx"]))
    assert submitted["spec"]["export"] == ["onnx"]

    job = flow.run_to_end(team, submitted["id"])

    assert job["status"] == "succeeded", job
    listed = team.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    by_name = {a["name"]: a for a in listed}
    assert {"student.onnx", "model_card.md", "curves.svg", "student.pt"} <= by_name.keys()
    downloads = {}
    for name in ("student.onnx", "model_card.md", "curves.svg"):
        body = team.get(f"/v1/jobs/{job['id']}/artifacts/{name}").content
        assert hashlib.sha256(body).hexdigest() == by_name[name]["sha256"]
        assert len(body) == by_name[name]["bytes"]
        downloads[name] = body

    (tmp_path / "student.onnx").write_bytes(downloads["student.onnx"])
    session = onnxruntime.InferenceSession(
        str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"x": digits.trained.x_val})
    accuracy = float((logits.argmax(1) == digits.trained.y_val).mean())
    assert accuracy == pytest.approx(job["metrics"]["student_accuracy"], abs=1e-6)

    card = downloads["model_card.md"].decode()
    assert f"# Model card: {job['id']}" in card
    assert "`teacher.pt`" in card and "`train.npz`" in card and "`val.npz`" in card
    assert f"{job['metrics']['student_accuracy']:.2%}" in card
    (spec_block,) = re.findall(r"```json\n(.*?)\n```", card, flags=re.S)
    assert json.loads(spec_block) == job["spec"]
    assert "student.onnx" in card and np.isfinite(logits).all()


def test_an_unknown_export_format_is_refused(team: Client) -> None:
    body = flow.spec("file_x", "file_y", export=["tflite"])
    response = team.post("/v1/jobs", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["param"].startswith("export")
