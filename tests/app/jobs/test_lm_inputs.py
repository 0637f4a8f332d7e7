"""Language-model teachers and data are taken at upload but refused at submit, and by
``POST /v1/jobs/validate`` alike, until the engine distils language models (issue 13)."""

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from tests.conftest import Client
from tests.helpers.api import error_of, upload
from tests.helpers.gguf import gguf_bytes


def _hf_zip(architecture: str, **config: Any) -> bytes:
    weights = safetensors.numpy.save({"w": np.zeros((4, 2), dtype=np.float32)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("config.json", json.dumps({"architectures": [architecture]} | config))
        zf.writestr("model.safetensors", weights)
        zf.writestr("tokenizer.json", "{}")
    return buffer.getvalue()


def _jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]}


@pytest.fixture
def files(team: Client) -> dict[str, str]:
    llama = _hf_zip("LlamaForCausalLM", model_type="llama", vocab_size=4, num_hidden_layers=1)
    classifier = _hf_zip("BertForSequenceClassification", model_type="bert", id2label={"0": "a"})
    return {
        "llama": upload(team, "llama.zip", llama, "teacher"),
        "gguf": upload(team, "m.gguf", gguf_bytes(), "teacher"),
        "classifier": upload(team, "bert.zip", classifier, "teacher"),
        "text": upload(team, "text.jsonl", _jsonl({"text": "a"}, {"text": "b"}), "dataset"),
        "pairs": upload(team, "p.jsonl", _jsonl({"prompt": "a", "completion": "b"}), "dataset"),
        "chat": upload(team, "c.jsonl", _jsonl(CHAT), "dataset"),
        "prompts": upload(team, "q.jsonl", _jsonl({"prompt": "a"}), "dataset"),
    }


def _spec(files: dict[str, str], teacher: str, train: str, validation: str | None = None) -> dict:
    data = {"train_file_id": files[train]}
    if validation is not None:
        data["validation_file_id"] = files[validation]
    return {
        "teacher": {"file_id": files[teacher]},
        "student": {"arch": "from_teacher", "layers": [0]},
        "data": data,
        "hyperparameters": {"alpha": 1.0},
    }


def _refusal(team: Client, body: dict) -> tuple[str, str, str]:
    """The submit's error, checked to be exactly what validate answers, with no job left."""
    submitted = error_of(team.post("/v1/jobs", json=body), 422)
    validated = error_of(team.post("/v1/jobs/validate", json=body), 422)
    assert validated == submitted
    assert team.get("/v1/jobs").json()["data"] == []
    return submitted["code"], submitted["param"], submitted["message"]


@pytest.mark.parametrize("teacher", ["llama", "gguf"])
def test_a_causal_lm_teacher_is_not_served_yet(
    team: Client, files: dict[str, str], teacher: str
) -> None:
    code, param, message = _refusal(team, _spec(files, teacher, "text"))
    assert (code, param) == ("unsupported_teacher", "teacher.file_id")
    assert "causal language model" in message
    assert "not served yet" in message


@pytest.mark.parametrize(
    ("train", "validation", "param"),
    [
        ("pairs", None, "data.train_file_id"),
        ("prompts", None, "data.train_file_id"),
        ("text", "chat", "data.validation_file_id"),
    ],
)
def test_language_model_data_with_a_classifier_is_not_served_yet(
    team: Client, files: dict[str, str], train: str, validation: str | None, param: str
) -> None:
    code, where, message = _refusal(team, _spec(files, "classifier", train, validation))
    assert (code, where) == ("unsupported_data", param)
    assert "not served yet" in message
    assert '{"text", "label"}' in message


def test_unlabelled_text_still_suits_a_classifier(team: Client, files: dict[str, str]) -> None:
    response = team.post("/v1/jobs/validate", json=_spec(files, "classifier", "text"))
    assert response.status_code == 200, response.text
