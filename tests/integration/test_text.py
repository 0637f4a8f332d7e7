"""Text distillation through the real API and a real worker process: a Hugging Face teacher
archive and jsonl reviews in, a DistilBERT-style student out, with the contract's text artifacts
(``student.pt`` on ``(input_ids, attention_mask)``, ``student_hf.zip`` loadable by transformers
alone); a tar.gz teacher with an ``hf`` student on unlabelled text; and bad text inputs."""

import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import Client, make_team
from tests.helpers.api import error_of, stored
from tests.helpers.text import (
    SMALL_BERT,
    save_hf_folder,
    trained_text_teacher,
    write_hf_archive,
    write_jsonl,
)
from tests.integration import flow

os.environ["HF_HUB_OFFLINE"] = "1"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

MAX_LENGTH = 48
TEXT_METRICS = {
    "teacher_accuracy", "student_accuracy", "baseline_accuracy", "agreement",
    "compression_ratio", "speedup", "layer_pairs", "teacher_params", "student_params",
}  # fmt: skip
TEXT_ARTIFACTS = {"student.pt", "student_hf.zip", "student.safetensors", "student.json",
                  "metrics.json"}  # fmt: skip


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny BERT teacher (4 layers, trained in seconds), as a zip and as a tar.gz, and jsonl
    files cut from its 1,000 reviews."""
    model, tokenizer, texts, labels = trained_text_teacher(n=1000)
    folder = tmp_path_factory.mktemp("text")
    return {
        "model": model,
        "tokenizer": tokenizer,
        "folder": folder,
        "zip": write_hf_archive(model, tokenizer, folder / "teacher.zip", kind="zip"),
        "tar": write_hf_archive(model, tokenizer, folder / "teacher.tar.gz", kind="tar"),
        "train": write_jsonl(folder / "train.jsonl", texts[:600], labels[:600]),
        "validation": write_jsonl(folder / "val.jsonl", texts[600:800], labels[600:800]),
        "unlabelled": write_jsonl(folder / "unlabelled.jsonl", texts[:600]),
        "val_texts": texts[600:800],
        "val_labels": labels[600:800],
    }


@pytest.fixture(scope="module")
def distilled(reviews: dict[str, Any], admin: Client, worker_process: Any) -> dict[str, Any]:
    """One DistilBERT-style job (teacher layers 0 and 2 of 4, hidden-state and attention
    matching, a baseline), followed live to its end and shared by the tests below."""
    client = make_team(admin)
    teacher = flow.upload(client, reviews["zip"], "teacher")
    train = flow.upload(client, reviews["train"], "dataset")
    validation = flow.upload(client, reviews["validation"], "dataset")
    spec = flow.spec(
        teacher["id"], train["id"], validation["id"],
        data={"max_length": MAX_LENGTH},
        hyperparameters={"epochs": 2, "batch_size": 32, "alpha": 0.9, "temperature": 2.0},
        losses={"hidden": {"metric": "cosine"}, "attention": {}},
        baseline=True,
    )  # fmt: skip
    spec["student"] = {"arch": "from_teacher", "layers": [0, 2]}  # flow.spec would merge
    submitted = flow.submit(client, spec)
    events = flow.events_until(client, submitted["id"])
    job = client.get(f"/v1/jobs/{submitted['id']}").json()
    return {"client": client, "submitted": submitted, "events": events, "job": job,
            "files": (teacher, train, validation)}  # fmt: skip


def artifact(client: Client, job_id: str, name: str) -> bytes:
    response = client.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert response.status_code == 200, response.text
    return response.content


def test_text_uploads_are_detected(distilled: dict[str, Any], reviews: dict[str, Any]) -> None:
    teacher, train, validation = distilled["files"]
    assert (teacher["format"], teacher["purpose"]) == ("hf_archive", "teacher")
    assert teacher["sha256"] == hashlib.sha256(reviews["zip"].read_bytes()).hexdigest()
    assert train["format"] == validation["format"] == "jsonl"
    assert train["bytes"] == reviews["train"].stat().st_size
    # The facts detection recorded come with the file (contract v2).
    assert teacher["meta"]["has_tokenizer"] is True
    assert train["meta"]["has_labels"] is True


def test_distilbert_style_job_succeeds_and_echoes_its_defaults(distilled: dict[str, Any]) -> None:
    job, echoed = distilled["job"], distilled["submitted"]["spec"]
    assert job["status"] == "succeeded", job["error"]
    assert flow.statuses(distilled["events"]) == ["queued", "running", "succeeded"]
    assert echoed["losses"] == {
        "logits": "kl",
        "beta": None,  # the jsd loss's, for language models
        "hidden": {"weight": 1.0, "metric": "cosine", "layers": None},
        "attention": {"weight": 1.0, "layers": None},
    }
    assert echoed["data"]["max_length"] == MAX_LENGTH
    assert echoed["student"] == {"arch": "from_teacher", "layers": [0, 2]}


def test_metrics_report_the_layer_pairing(distilled: dict[str, Any]) -> None:
    metrics = distilled["job"]["metrics"]
    assert metrics.keys() >= TEXT_METRICS
    assert metrics["compression_ratio"] > 1 and metrics["speedup"] > 0
    assert 0.0 <= metrics["agreement"] <= 1.0
    for name in ("teacher_accuracy", "student_accuracy", "baseline_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0, name
    assert metrics["layer_pairs"] == {"hidden": [[0, 1], [1, 3]], "attention": [[0, 1], [1, 3]]}


def test_metric_points_carry_the_layer_losses(distilled: dict[str, Any]) -> None:
    client, job_id = distilled["client"], distilled["job"]["id"]
    points: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
        page = client.get(f"/v1/jobs/{job_id}/metrics", params=params)
        assert page.status_code == 200, page.text
        points += page.json()["data"]
        if not page.json()["has_more"]:
            break
        after = points[-1]["step"]
    layered = [p for p in points if p.get("attention_loss") is not None]
    assert layered and all(p.get("hidden_loss") is not None for p in layered)
    assert all(p["hidden_loss"] >= 0 and p["attention_loss"] >= 0 for p in layered)


def test_the_layer_matching_is_logged_as_an_event(distilled: dict[str, Any]) -> None:
    logs = [e for e in distilled["events"] if e["type"] == "log"]
    pairing = [e["message"] for e in logs if e["message"].startswith("Layer matching")]
    assert len(pairing) == 1, logs
    assert "hidden cosine: student layer 0" in pairing[0]
    assert (
        f"attention kl: student layer 1 (B, 2, {MAX_LENGTH}, {MAX_LENGTH}) -> teacher layer 3"
        in pairing[0]
    )


def test_text_artifacts_download_with_their_sha256(distilled: dict[str, Any]) -> None:
    client, job_id = distilled["client"], distilled["job"]["id"]
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    assert {a["name"] for a in listed} >= TEXT_ARTIFACTS
    for item in listed:
        response = client.get(f"/v1/jobs/{job_id}/artifacts/{item['name']}")
        assert response.status_code == 200, response.text
        assert hashlib.sha256(response.content).hexdigest() == item["sha256"]
        assert response.headers["etag"] == f'"{item["sha256"]}"'
    info = json.loads(artifact(client, job_id, "student.json"))
    assert info["arch"]["arch"] == "hf" and info["arch"]["config"]["num_hidden_layers"] == 2


def test_student_hf_zip_and_student_pt_agree_and_give_the_reported_accuracy(
    distilled: dict[str, Any], reviews: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    client, job = distilled["client"], distilled["job"]
    with zipfile.ZipFile(io.BytesIO(artifact(client, job["id"], "student_hf.zip"))) as zf:
        zf.extractall(tmp_path / "unzipped")
    folder = next(p.parent for p in (tmp_path / "unzipped").rglob("config.json"))
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    deployed = torch.jit.load(io.BytesIO(artifact(client, job["id"], "student.pt")))

    def encode(texts: list[str]) -> Any:
        return tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )

    few = encode(reviews["val_texts"][:5])
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(**few).logits,
            deployed(few["input_ids"], few["attention_mask"]),
            atol=1e-5,
            rtol=1e-4,
        )
        every = encode(reviews["val_texts"])
        student_logits = deployed(every["input_ids"], every["attention_mask"])
        teacher_logits = reviews["model"](**every).logits  # the uploaded teacher's weights
    metrics = job["metrics"]
    predicted = student_logits.argmax(dim=1)
    measured = float((predicted == torch.tensor(reviews["val_labels"])).float().mean())
    assert measured == pytest.approx(metrics["student_accuracy"], abs=1e-6)
    # The tiny teacher may be close to a constant predictor, which would make accuracy alone a
    # weak check; agreement and the KL to the teacher test the logits themselves.
    agreement = float((predicted == teacher_logits.argmax(dim=1)).float().mean())
    assert agreement == pytest.approx(metrics["agreement"], abs=1e-6)
    kl = torch.nn.functional.kl_div(
        student_logits.log_softmax(1), teacher_logits.log_softmax(1), log_target=True,
        reduction="batchmean",
    )  # fmt: skip
    assert float(kl) == pytest.approx(metrics["kl_divergence"], rel=1e-2, abs=1e-6)


def test_tar_teacher_with_an_hf_student_on_unlabelled_text(
    team: Client, reviews: dict[str, Any], worker_process: Any
) -> None:
    teacher = flow.upload(team, reviews["tar"], "teacher")
    assert teacher["format"] == "hf_archive"
    train = flow.upload(team, reviews["unlabelled"], "dataset")
    validation = flow.upload(team, reviews["validation"], "dataset")
    spec = flow.spec(
        teacher["id"], train["id"], validation["id"],
        hyperparameters={"epochs": 1, "batch_size": 32, "alpha": 1.0},
    )  # fmt: skip
    spec["student"] = SMALL_BERT
    submitted = flow.submit(team, spec)
    assert submitted["spec"]["data"]["max_length"] == 128  # the default, echoed
    assert submitted["spec"]["losses"] == {
        "logits": "kl",
        "beta": None,
        "hidden": None,
        "attention": None,
    }
    job = flow.run_to_end(team, submitted["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["student_accuracy"] is not None  # validation has labels
    names = {a["name"] for a in team.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
    assert names >= TEXT_ARTIFACTS


# --- bad text input -------------------------------------------------------------------------


def assert_healthy(team: Client, worker_process: Any) -> None:
    assert team.api.get("/healthz").status_code == 200
    ready = team.api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert worker_process.poll() is None, "the worker process died"


def zip_of(folder: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(file, "model/" + str(file.relative_to(folder)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def test_teacher_needing_remote_code_is_refused_at_upload(
    team: Client, reviews: dict[str, Any], worker_process: Any, tmp_path: Path
) -> None:
    folder = save_hf_folder(reviews["model"], reviews["tokenizer"], tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    before = stored(team)

    response = team.post(
        "/v1/files",
        files={"file": ("remote.zip", zip_of(folder, tmp_path / "remote.zip").read_bytes())},
        data={"purpose": "teacher"},
    )

    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsafe_file", "file"), error
    assert "trust_remote_code" in error["message"] and "auto_map" in error["message"]
    assert stored(team) == before
    assert_healthy(team, worker_process)


def test_zip_slip_member_is_refused_at_upload_and_never_written(
    team: Client, reviews: dict[str, Any], worker_process: Any, tmp_path: Path
) -> None:
    folder = save_hf_folder(reviews["model"], reviews["tokenizer"], tmp_path / "model")
    hostile = zip_of(folder, tmp_path / "slip.zip", {"../escape.txt": b"out of the archive"})
    before = stored(team)

    with hostile.open("rb") as f:
        response = team.post(
            "/v1/files", files={"file": ("slip.zip", f)}, data={"purpose": "teacher"}
        )

    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsafe_file", "file"), error
    assert "../escape.txt" in error["message"] and ".." in error["message"]
    assert stored(team) == before
    # The storage dir is a pytest temp dir: its parent holds every test's files; the worker
    # unpacks teachers under the system temp dir (distill-teacher-*).
    storage_dir = Path(os.environ["DISTILL_STORAGE_DIR"])
    places = [storage_dir.parent, Path(tempfile.gettempdir())]
    assert not any((place / "escape.txt").exists() for place in places)
    assert not list(storage_dir.parent.rglob("escape.txt"))
    for unpacked in Path(tempfile.gettempdir()).glob("distill-teacher-*"):
        assert not list(unpacked.rglob("escape.txt")), unpacked
    assert_healthy(team, worker_process)


def test_an_mlp_student_cannot_read_text(
    team: Client, reviews: dict[str, Any], worker_process: Any
) -> None:
    teacher = flow.upload(team, reviews["zip"], "teacher")["id"]
    train = flow.upload(team, reviews["train"], "dataset")["id"]

    response = team.post("/v1/jobs", json=flow.spec(teacher, train))  # flow.spec's mlp student

    error = error_of(response, 422)
    assert (error["code"], error["param"]) == ("unsupported_arch", "student.arch"), error
    assert team.get("/v1/jobs").json()["data"] == []
    assert_healthy(team, worker_process)
