"""Language-model distillation through the real API and a real worker process: a causal-LM
teacher archive and jsonl text in, the task inferred, a half-depth student out with the
contract's metrics and artifacts; a second job on the same teacher and data reads the stored
teacher signal instead of running the teacher; a pretrained student file as the starting point;
and the real SmolLM2-135M GGUF as a teacher."""

import io
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client, make_team
from tests.helpers.gguf import smollm2_gguf
from tests.helpers.lm import (
    lm_corpus,
    lm_tokenizer,
    messages_rows,
    text_rows,
    tiny_llama,
    trained_lm_teacher,
    write_jsonl,
)
from tests.helpers.text import write_hf_archive
from tests.integration import flow

os.environ["HF_HUB_OFFLINE"] = "1"

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

LM_METRICS = {
    "teacher_perplexity", "student_perplexity", "baseline_perplexity", "token_agreement",
    "kl_divergence", "teacher_params", "student_params", "compression_ratio",
    "teacher_tokens_per_second", "student_tokens_per_second", "speedup", "train_seconds",
    "train_tokens", "teacher_cache", "teacher_signal_bytes_per_token", "teacher_signal_kl",
}  # fmt: skip
LM_ARTIFACTS = {"student_hf.zip", "student.safetensors", "student.json", "metrics.json",
                "model_card.md"}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lm")
    texts = lm_corpus(200, seed=11)
    return {
        "teacher": write_hf_archive(trained_lm_teacher(), lm_tokenizer(), folder / "teacher.zip"),
        "train": write_jsonl(folder / "train.jsonl", text_rows(texts[:160])),
        "validation": write_jsonl(folder / "val.jsonl", text_rows(texts[160:])),
        "chat": write_jsonl(folder / "chat.jsonl", messages_rows(texts[:80])),
        "pretrained": write_hf_archive(
            tiny_llama(lm_tokenizer(), num_layers=2, seed=3), lm_tokenizer(), folder / "small.zip"
        ),
    }


def lm_spec(teacher: str, train: str, validation: str, **over: Any) -> dict[str, Any]:
    body = flow.spec(
        teacher,
        train,
        validation,
        data={"max_length": 48},
        hyperparameters={"epochs": 2, "batch_size": 16, "learning_rate": 3e-3, "teacher_top_k": 16},
    )
    body["student"] = {"arch": "from_teacher", "layers": [0, 3]}
    return body | over


@pytest.fixture(scope="module")
def distilled(corpus: dict[str, Path], admin: Client, worker_process: Any) -> dict[str, Any]:
    client = make_team(admin)
    files = {
        name: flow.upload(client, corpus[name], "teacher" if name == "teacher" else "dataset")
        for name in ("teacher", "train", "validation")
    }
    ids = (files["teacher"]["id"], files["train"]["id"], files["validation"]["id"])
    first = flow.submit(client, lm_spec(*ids, baseline=True))
    first_job = flow.run_to_end(client, first["id"])
    second = flow.submit(client, lm_spec(*ids))
    second_events = flow.events_until(client, second["id"])
    second_job = client.get(f"/v1/jobs/{second['id']}").json()
    return {
        "client": client,
        "files": files,
        "submitted": first,
        "job": first_job,
        "second": second_job,
        "second_events": second_events,
    }


def test_the_task_is_inferred_from_the_teacher(distilled: dict[str, Any]) -> None:
    teacher = distilled["files"]["teacher"]
    assert teacher["meta"]["task"] == "causal_lm"
    echoed = distilled["submitted"]["spec"]
    assert echoed["task"] == "causal_lm"
    assert echoed["losses"]["logits"] == "forward_kl"
    assert echoed["hyperparameters"]["temperature"] == 1.0


def test_a_language_model_job_reports_the_contracts_metrics(distilled: dict[str, Any]) -> None:
    job = distilled["job"]
    assert job["status"] == "succeeded", job["error"]
    metrics = job["metrics"]
    assert metrics.keys() >= LM_METRICS
    assert metrics["teacher_cache"] == "miss"
    for name in ("teacher_perplexity", "student_perplexity", "baseline_perplexity"):
        assert math.isfinite(metrics[name]) and 1 < metrics[name] < 512, name
    assert metrics["compression_ratio"] > 1


def test_a_second_job_reads_the_stored_signal(distilled: dict[str, Any]) -> None:
    second = distilled["second"]
    assert second["status"] == "succeeded", second["error"]
    assert second["metrics"]["teacher_cache"] == "hit"
    messages = [e["message"] for e in distilled["second_events"] if e["type"] == "log"]
    assert not any(m.startswith("Teacher pass") for m in messages)
    assert any("found in the store" in m for m in messages)


def test_the_student_downloads_and_generates(distilled: dict[str, Any], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    client, job = distilled["client"], distilled["job"]
    listed = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
    assert listed >= LM_ARTIFACTS and "student.pt" not in listed
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/student_hf.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        zf.extractall(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    ids = tokenizer("the film is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    card = client.get(f"/v1/jobs/{job['id']}/artifacts/model_card.md").text
    assert "perplexity" in card.lower()


def test_a_pretrained_student_and_chat_data(
    distilled: dict[str, Any], corpus: dict[str, Path]
) -> None:
    client, files = distilled["client"], distilled["files"]
    student = flow.upload(client, corpus["pretrained"], "teacher")
    chat = flow.upload(client, corpus["chat"], "dataset")
    spec = lm_spec(files["teacher"]["id"], chat["id"], None)
    spec["data"] = {"train_file_id": chat["id"], "max_length": 64, "validation_split": 0.2}
    spec["student"] = {"file_id": student["id"]}
    spec["hyperparameters"]["epochs"] = 1
    submitted = flow.submit(client, spec)
    assert submitted["spec"]["student"] == {"arch": "pretrained", "file_id": student["id"]}
    job = flow.run_to_end(client, submitted["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["student_params"] < job["metrics"]["teacher_params"]


@pytest.mark.slow
def test_the_real_smollm2_gguf_teaches_a_two_layer_student(
    corpus: dict[str, Path], admin: Client, worker_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real 135M model, dequantized on the worker, on a few dozen short snippets."""
    from app.config import get_settings

    client = make_team(admin)
    monkeypatch.setenv("DISTILL_MAX_UPLOAD_BYTES", str(256 * 2**20))  # the file is ~90 MB
    get_settings.cache_clear()
    try:
        teacher = flow.upload(client, smollm2_gguf(), "teacher")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    texts = lm_corpus(40, seed=12)
    folder = corpus["train"].parent
    train = flow.upload(client, write_jsonl(folder / "small.jsonl", text_rows(texts)), "dataset")
    spec = flow.spec(teacher["id"], train["id"], None)
    spec["student"] = {"arch": "from_teacher", "layers": [0, 29]}
    spec["data"] = {"train_file_id": train["id"], "max_length": 32, "validation_split": 0.25}
    spec["hyperparameters"] = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-4}
    submitted = flow.submit(client, spec)
    assert submitted["spec"]["task"] == "causal_lm"
    events = flow.events_until(client, submitted["id"], timeout=900)
    job = client.get(f"/v1/jobs/{submitted['id']}").json()
    assert job["status"] == "succeeded", (job["error"], events[-5:])
    metrics = job["metrics"]
    assert 1 < metrics["teacher_perplexity"] < metrics["student_perplexity"]
    assert metrics["teacher_params"] > 100_000_000
