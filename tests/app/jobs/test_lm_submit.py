"""Language-model jobs at submit and ``POST /v1/jobs/validate``: the task inferred from a causal-LM
teacher, and each bad spec refused with the contract's error before a job exists. Real uploads:
tiny Llamas over the offline tokenizer of tests/helpers/lm.py, archived as save_pretrained
writes them, GGUF files built byte by byte, jsonl of every kind."""

import functools
import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from app import storage
from tests.conftest import Client, make_team
from tests.helpers.api import error_of, upload
from tests.helpers.gguf import gguf_bytes, gguf_string
from tests.helpers.lm import (
    lm_tokenizer,
    messages_rows,
    prompt_completion_rows,
    prompt_rows,
    text_rows,
)
from tests.helpers.text import write_hf_archive

TEXTS = ["a fine film", "a dull film with a fine cast", "it drags", "warm and funny"]
SWAPPED = [(100, 101), (200, 201), (300, 301)]  # token ids whose tokens a student swaps


# --- uploads -----------------------------------------------------------------------------------


def _llama(
    layers: int, *, chat_template: bool = True, vocab_extra: int = 0, max_positions: int = 256
) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = lm_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + vocab_extra,  # extra: padding rows past the tokenizer
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
    )
    return LlamaForCausalLM(config), tokenizer


@functools.cache
def llama_archive(
    layers: int = 2,
    chat_template: bool = True,
    vocab_extra: int = 0,
    max_positions: int = 256,
    kind: str = "zip",
) -> bytes:
    model, tokenizer = _llama(
        layers, chat_template=chat_template, vocab_extra=vocab_extra, max_positions=max_positions
    )
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / f"model.{kind}"
        write_hf_archive(model, tokenizer, dest, kind="zip" if kind == "zip" else "tar")
        return dest.read_bytes()


def swapped_tokens_archive() -> bytes:
    """A one-layer student whose tokenizer.json swaps the tokens of the ids in ``SWAPPED``."""
    source, out = io.BytesIO(llama_archive(layers=1)), io.BytesIO()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("tokenizer.json"):
                tokenizer = json.loads(data)
                by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
                for a, b in SWAPPED:
                    by_id[a], by_id[b] = by_id[b], by_id[a]
                tokenizer["model"]["vocab"] = {t: i for i, t in by_id.items()}
                data = json.dumps(tokenizer).encode()
            zout.writestr(info, data)
    return out.getvalue()


def teacher_tokens() -> list[str]:
    tokenizer = lm_tokenizer()
    return list(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))


def gguf_model(tokens: list[str], layers: int = 2, context: int = 256) -> bytes:
    """A llama GGUF file with an embedded vocabulary; its one tensor holds 64 parameters."""

    def kv(key: str, type_id: int, value: bytes) -> bytes:
        return gguf_string(key) + struct.pack("<I", type_id) + value

    strings = struct.pack("<IQ", 8, len(tokens)) + b"".join(gguf_string(t) for t in tokens)
    return gguf_bytes(
        [
            kv("general.architecture", 8, gguf_string("llama")),
            kv("llama.block_count", 4, struct.pack("<I", layers)),
            kv("llama.context_length", 4, struct.pack("<I", context)),
            kv("tokenizer.ggml.tokens", 9, strings),
        ]
    )


def classifier_archive() -> bytes:
    weights = safetensors.numpy.save({"w": np.zeros((4, 2), dtype=np.float32)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert"}
        zf.writestr("config.json", json.dumps(config | {"id2label": {"0": "a", "1": "b"}}))
        zf.writestr("model.safetensors", weights)
        zf.writestr("tokenizer.json", "{}")
    return buffer.getvalue()


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def lm(team: Client) -> dict[str, str]:
    """The team's uploads by name (more through ``add``)."""
    return {
        "teacher": upload(team, "teacher.zip", llama_archive(), "teacher"),
        "classifier": upload(team, "bert.zip", classifier_archive(), "teacher"),
        "text": upload(team, "text.jsonl", jsonl(text_rows(TEXTS)), "dataset"),
        "labelled": upload(team, "l.jsonl", jsonl([{"text": "a", "label": 1}]), "dataset"),
        "pairs": upload(team, "p.jsonl", jsonl(prompt_completion_rows(TEXTS)), "dataset"),
        "chat": upload(team, "c.jsonl", jsonl(messages_rows(TEXTS)), "dataset"),
        "prompts": upload(team, "q.jsonl", jsonl(prompt_rows(TEXTS)), "dataset"),
    }


def spec(
    lm: dict[str, str],
    teacher: str = "teacher",
    train: str = "text",
    validation: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {"train_file_id": lm[train]}
    if validation is not None:
        data["validation_file_id"] = lm[validation]
    return {
        "teacher": {"file_id": lm[teacher]},
        "student": {"arch": "from_teacher", "layers": [0]},
        "data": data,
        **more,
    }


def refusal(team: Client, body: dict) -> dict[str, Any]:
    """The submit's error, checked to be exactly what validate answers, with no job left."""
    submitted = error_of(team.post("/v1/jobs", json=body), 422)
    assert error_of(team.post("/v1/jobs/validate", json=body), 422) == submitted
    assert team.get("/v1/jobs").json()["data"] == []
    return submitted


def submitted(team: Client, body: dict) -> dict[str, Any]:
    response = team.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- the task ----------------------------------------------------------------------------------


@pytest.mark.parametrize("teacher", ["teacher", "gguf"])
def test_a_causal_lm_teacher_makes_the_job_a_language_model(
    team: Client, lm: dict[str, str], teacher: str
) -> None:
    lm["gguf"] = upload(team, "m.gguf", gguf_model(teacher_tokens()), "teacher")
    job = submitted(team, spec(lm, teacher))
    echo = job["spec"]
    assert echo["task"] == "causal_lm"
    assert echo["losses"]["logits"] == "forward_kl"
    assert echo["losses"]["beta"] is None
    assert echo["hyperparameters"]["temperature"] == 1.0
    assert echo["hyperparameters"]["teacher_top_k"] == 64
    assert echo["hyperparameters"]["teacher_signal"] == "sampled"
    assert echo["hyperparameters"]["teacher_draws"] == 128
    assert echo["student"] == {"arch": "from_teacher", "layers": [0]}
    assert echo["generation"] is None


def test_validate_answers_the_resolved_spec(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, train="prompts", losses={"logits": "jsd"})
    answer = team.post("/v1/jobs/validate", json=body).json()
    assert answer["task"] == "causal_lm"
    assert answer["spec"]["losses"] == {
        "logits": "jsd",
        "beta": 0.5,
        "hidden": None,
        "attention": None,
    }
    # {"prompt"}-only data: the teacher writes the completions, with the default generation.
    assert answer["spec"]["generation"] == {
        "max_new_tokens": 128,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
    }
    assert submitted(team, body)["spec"] == answer["spec"]


def test_a_classifier_job_echoes_as_before(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, "classifier")
    body["student"] = {"arch": "transformer"}
    body["hyperparameters"] = {"alpha": 1.0}
    echo = submitted(team, body)["spec"]
    assert echo["task"] == "classification"
    assert echo["losses"]["logits"] == "kl"
    assert echo["hyperparameters"]["temperature"] == 4.0
    assert echo["hyperparameters"]["teacher_top_k"] is None
    assert echo["hyperparameters"]["teacher_signal"] is None
    assert echo["hyperparameters"]["teacher_draws"] is None
    assert (echo["generation"], echo["data"]["packing"]) == (None, False)


@pytest.mark.parametrize(
    ("field", "param"),
    [
        ({"hyperparameters": {"alpha": 1.0, "teacher_top_k": 8}}, "hyperparameters.teacher_top_k"),
        ({"hyperparameters": {"alpha": 1.0}, "generation": {}}, "generation"),
        ({"hyperparameters": {"alpha": 1.0}, "losses": {"logits": "jsd"}}, "losses.logits"),
    ],
)
def test_a_language_model_field_in_a_classifier_job_is_refused(
    team: Client, lm: dict[str, str], field: dict, param: str
) -> None:
    body = spec(lm, "classifier") | field
    body["student"] = {"arch": "transformer"}
    error = refusal(team, body)
    assert (error["code"], error["param"]) == ("invalid_request", param)
    assert error["message"].startswith(f"{param} is for language models")


def test_a_classifier_teacher_with_an_explicit_causal_lm_task(
    team: Client, lm: dict[str, str]
) -> None:
    error = refusal(team, spec(lm, "classifier", task="causal_lm"))
    assert (error["code"], error["param"]) == ("unsupported_teacher", "teacher.file_id")
    assert "not a causal language model" in error["message"]


def test_a_causal_lm_teacher_with_an_explicit_classification_task(
    team: Client, lm: dict[str, str]
) -> None:
    body = spec(lm, task="classification", student={"arch": "transformer"})
    body["hyperparameters"] = {"alpha": 1.0}
    error = refusal(team, body)
    assert (error["code"], error["param"]) == ("unsupported_teacher", "teacher.file_id")
    assert 'drop "task"' in error["message"]


def test_a_language_model_student_is_required(team: Client, lm: dict[str, str]) -> None:
    error = refusal(team, spec(lm, student={"arch": "mlp"}))
    assert (error["code"], error["param"]) == ("invalid_request", "student")


# --- data --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "validation", "param"),
    [
        ("pairs", None, "data.train_file_id"),
        ("prompts", None, "data.train_file_id"),
        ("text", "chat", "data.validation_file_id"),
    ],
)
def test_language_model_data_with_a_classifier_teacher(
    team: Client, lm: dict[str, str], train: str, validation: str | None, param: str
) -> None:
    body = spec(lm, "classifier", train, validation, student={"arch": "transformer"})
    error = refusal(team, body | {"hyperparameters": {"alpha": 1.0}})
    assert (error["code"], error["param"]) == ("unsupported_data", param)
    assert "causal-LM teacher" in error["message"]


def test_unlabelled_text_still_suits_a_classifier(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, "classifier", student={"arch": "transformer"})
    response = team.post("/v1/jobs/validate", json=body | {"hyperparameters": {"alpha": 1.0}})
    assert response.status_code == 200, response.text
    assert response.json()["task"] == "classification"


@pytest.mark.parametrize(
    ("train", "validation", "code", "param"),
    [
        ("labelled", None, "unsupported_data", "data.train_file_id"),
        ("prompts", "text", "unsupported_data", "data.validation_file_id"),
        ("text", "prompts", "unsupported_data", "data.validation_file_id"),
    ],
)
def test_data_a_language_model_cannot_learn_from(
    team: Client, lm: dict[str, str], train: str, validation: str | None, code: str, param: str
) -> None:
    error = refusal(team, spec(lm, train=train, validation=validation))
    assert (error["code"], error["param"]) == (code, param)


def test_files_of_two_kinds_with_targets_go_together(team: Client, lm: dict[str, str]) -> None:
    assert submitted(team, spec(lm, train="pairs", validation="chat"))["spec"]["task"] == (
        "causal_lm"
    )


def test_tensor_data_is_refused(team: Client, lm: dict[str, str]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((4, 2), dtype=np.float32))
    lm["npz"] = upload(team, "x.npz", buffer.getvalue(), "dataset")
    error = refusal(team, spec(lm, train="npz"))
    assert (error["code"], error["param"]) == ("unsupported_data", "data.train_file_id")
    assert "jsonl" in error["message"]


@pytest.mark.parametrize("where", ["data.train_file_id", "data.validation_file_id"])
def test_messages_need_a_chat_template(team: Client, lm: dict[str, str], where: str) -> None:
    lm["plain"] = upload(team, "plain.zip", llama_archive(chat_template=False), "teacher")
    body = (
        spec(lm, "plain", train="chat")
        if where == "data.train_file_id"
        else spec(lm, "plain", train="pairs", validation="chat")
    )
    error = refusal(team, body)
    assert (error["code"], error["param"]) == ("no_chat_template", where)
    assert "chat template" in error["message"]
    assert team.post("/v1/jobs/validate", json=spec(lm, train="chat")).status_code == 200


def test_generation_is_for_prompt_only_data(team: Client, lm: dict[str, str]) -> None:
    error = refusal(team, spec(lm, train="pairs", generation={"max_new_tokens": 8}))
    assert (error["code"], error["param"]) == ("invalid_request", "generation")
    kept = submitted(team, spec(lm, train="prompts", generation={"max_new_tokens": 8}))
    assert kept["spec"]["generation"]["max_new_tokens"] == 8


def test_max_length_beyond_the_teachers_positions(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm)
    body["data"]["max_length"] = 512
    error = refusal(team, body)
    assert (error["code"], error["param"]) == ("invalid_request", "data.max_length")
    assert "at most 256 positions" in error["message"]
    body["data"]["max_length"] = 256
    assert team.post("/v1/jobs/validate", json=body).status_code == 200


# --- students ----------------------------------------------------------------------------------


def test_from_teacher_layers_are_the_teachers(team: Client, lm: dict[str, str]) -> None:
    error = refusal(team, spec(lm, student={"arch": "from_teacher", "layers": [0, 2]}))
    assert (error["code"], error["param"]) == ("unsupported_arch", "student.layers")
    assert "the teacher has 2 layers (0 to 1)" in error["message"]


def test_a_student_keeping_every_layer_is_warned_of(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, student={"arch": "from_teacher", "layers": [0, 1]})
    answer = team.post("/v1/jobs/validate", json=body).json()
    warning = next(w for w in answer["warnings"] if w["code"] == "student_not_smaller")
    assert warning["param"] == "student"
    assert "as many as the teacher" in warning["message"]
    smaller = team.post("/v1/jobs/validate", json=spec(lm)).json()
    assert "student_not_smaller" not in {w["code"] for w in smaller["warnings"]}


@pytest.mark.parametrize(
    ("config", "code", "param"),
    [
        ({"model_type": "bert"}, "unsupported_arch", "student.config"),
        (
            {"model_type": "gpt2", "architectures": ["GPT2ForSequenceClassification"]},
            "unsupported_arch",
            "student.config",
        ),
        (
            {"model_type": "llama", "vocab_size": 100},
            "vocabulary_mismatch",
            "student.config.vocab_size",
        ),
        (
            {"model_type": "llama", "max_position_embeddings": 64},
            "invalid_request",
            "data.max_length",
        ),
    ],
)
def test_an_hf_student_config_that_cannot_be_a_causal_lm_over_the_teachers_tokens(
    team: Client, lm: dict[str, str], config: dict, code: str, param: str
) -> None:
    error = refusal(team, spec(lm, student={"arch": "hf", "config": config}))
    assert (error["code"], error["param"]) == (code, param)


def test_an_hf_causal_lm_student_is_taken(team: Client, lm: dict[str, str]) -> None:
    config = {"model_type": "llama", "num_hidden_layers": 1, "vocab_size": len(lm_tokenizer())}
    job = submitted(team, spec(lm, student={"arch": "hf", "config": config}))
    assert job["spec"]["student"]["config"] == config


def test_a_pretrained_student_with_padding_rows_is_taken_and_kept_from_deletion(
    team: Client, lm: dict[str, str]
) -> None:
    # The student's embedding has 64 rows past the tokenizer (as for tensor cores); its tokens,
    # read from a tar.gz, are the teacher's.
    student = upload(team, "s.tar.gz", llama_archive(1, vocab_extra=64, kind="tar"), "teacher")
    job = submitted(team, spec(lm, student={"file_id": student}))
    assert job["spec"]["student"] == {"arch": "pretrained", "file_id": student}
    in_use = error_of(team.delete(f"/v1/files/{student}"), 409)
    assert in_use["code"] == "file_in_use"
    assert team.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert team.delete(f"/v1/files/{student}").status_code == 204


@pytest.mark.parametrize("reading", ["local", "ranged"])
def test_a_pretrained_student_with_other_tokens_is_a_vocabulary_mismatch(
    team: Client, lm: dict[str, str], reading: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    student = upload(team, "s.zip", swapped_tokens_archive(), "teacher")
    remote = _Remote(storage.get_store())
    if reading == "ranged":
        monkeypatch.setattr(storage, "get_store", lambda: remote)
    error = refusal(team, spec(lm, student={"file_id": student}))
    assert (error["code"], error["param"]) == ("vocabulary_mismatch", "student.file_id")
    assert "6 token ids differ, at ids 100, 101, 200, 201, 300, ..." in error["message"]
    assert f"({len(lm_tokenizer()):,} tokens)" in error["message"]
    if reading == "ranged":  # the two tokenizers read, not the weights beside them
        assert 0 < remote.read < len(llama_archive()) + len(swapped_tokens_archive())


class _Remote:
    """The store as object storage is seen: no local file, byte ranges only, counted."""

    def __init__(self, store: Any) -> None:
        self.store, self.read = store, 0

    def local_path(self, key: str) -> None:
        return None

    def open(self, key: str, start: int = 0, stop: int | None = None) -> Any:
        assert stop is not None, "a whole object read"
        self.read += stop - start
        return self.store.open(key, start, stop)


def test_a_gguf_student_is_compared_by_its_embedded_tokens(
    team: Client, lm: dict[str, str]
) -> None:
    tokens = teacher_tokens()
    same = upload(team, "same.gguf", gguf_model(tokens, layers=1), "teacher")
    taken = team.post("/v1/jobs/validate", json=spec(lm, student={"file_id": same}))
    assert taken.status_code == 200, taken.text
    tokens[7], tokens[9] = tokens[9], tokens[7]
    other = upload(team, "other.gguf", gguf_model([*tokens, "<extra>"], layers=1), "teacher")
    error = refusal(team, spec(lm, student={"file_id": other}))
    assert (error["code"], error["param"]) == ("vocabulary_mismatch", "student.file_id")
    assert f"3 token ids differ, at ids 7, 9, {len(tokens)}." in error["message"]


def test_a_pretrained_student_bigger_than_its_teacher_is_warned_of(
    team: Client, lm: dict[str, str]
) -> None:
    student = upload(team, "big.zip", llama_archive(layers=3), "teacher")
    answer = team.post("/v1/jobs/validate", json=spec(lm, student={"file_id": student})).json()
    warning = next(w for w in answer["warnings"] if w["code"] == "student_not_smaller")
    assert warning["param"] == "student"


def test_a_pretrained_students_positions_bound_max_length(team: Client, lm: dict[str, str]) -> None:
    student = upload(team, "short.zip", llama_archive(1, max_positions=64), "teacher")
    error = refusal(team, spec(lm, student={"file_id": student}))
    assert (error["code"], error["param"]) == ("invalid_request", "data.max_length")
    assert "the student reads at most 64 positions" in error["message"]


@pytest.mark.parametrize(
    ("student", "status", "code"),
    [
        ("classifier", 422, "unsupported_student"),
        ("text", 422, "wrong_purpose"),
        ("missing", 404, "not_found"),
    ],
)
def test_a_pretrained_student_file_that_cannot_start_a_language_model(
    team: Client, lm: dict[str, str], student: str, status: int, code: str
) -> None:
    body = spec(lm, student={"file_id": lm.get(student, "file_missing")})
    error = error_of(team.post("/v1/jobs", json=body), status)
    assert (error["code"], error["param"]) == (code, "student.file_id")


def test_another_teams_student_file_is_not_found(
    team: Client, admin: Client, lm: dict[str, str]
) -> None:
    other = make_team(admin)
    theirs = upload(other, "s.zip", llama_archive(layers=1), "teacher")
    error = error_of(
        team.post("/v1/jobs/validate", json=spec(lm, student={"file_id": theirs})), 404
    )
    assert (error["code"], error["param"]) == ("not_found", "student.file_id")


# --- losses ------------------------------------------------------------------------------------


def test_hidden_matching_is_taken_with_pairs_in_both_models(
    team: Client, lm: dict[str, str]
) -> None:
    echo = submitted(team, spec(lm, losses={"hidden": {}}))["spec"]["losses"]["hidden"]
    assert echo == {"weight": 1.0, "layers": None, "metric": "mse"}  # the worker pairs them
    student = {"arch": "from_teacher", "layers": [0, 1]}
    body = spec(lm, student=student, losses={"hidden": {"layers": [[0, 0], [1, 1]]}})
    assert submitted(team, body)["spec"]["losses"]["hidden"]["layers"] == [[0, 0], [1, 1]]


HF_STUDENT = {"arch": "hf", "config": {"model_type": "llama", "num_hidden_layers": 1}}


@pytest.mark.parametrize(
    ("student", "pairs", "message"),
    [
        ("cut", [[0, 0], [1, 1]], "losses.hidden.layers.1 names student layer 1, but the "
         "student has 1 layers (0 to 0)."),
        ("cut", [[0, 2]], "losses.hidden.layers.0 names teacher layer 2, but the teacher has "
         "2 layers (0 to 1)."),
        ("hf", [[0, 1], [1, 1]], "losses.hidden.layers.1 names student layer 1"),
        ("pretrained", [[3, 1]], "losses.hidden.layers.0 names student layer 3"),
    ],
)  # fmt: skip
def test_a_pair_past_either_models_layers_is_refused(
    team: Client, lm: dict[str, str], student: str, pairs: list, message: str
) -> None:
    students = {"cut": {"arch": "from_teacher", "layers": [0]}, "hf": HF_STUDENT}
    if student == "pretrained":
        students[student] = {"file_id": upload(team, "s.zip", llama_archive(1), "teacher")}
    body = spec(lm, student=students[student], losses={"hidden": {"layers": pairs}})
    error = refusal(team, body)
    param = message.split(" ")[0]
    assert (error["code"], error["param"]) == ("invalid_request", param)
    assert error["message"].startswith(message)


def test_sweeps_and_the_baseline_are_taken(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, baseline=True, sweep={"temperature": [1.0, 2.0], "alpha": [0.5, 0.9]})
    body["hyperparameters"] = {"early_stopping": {"patience": 2}}
    echo = submitted(team, body)["spec"]
    assert echo["baseline"] is True
    assert echo["hyperparameters"]["early_stopping"]["metric"] == "val_perplexity"


def test_top_k_beyond_the_teachers_vocabulary(team: Client, lm: dict[str, str]) -> None:
    body = spec(lm, hyperparameters={"teacher_top_k": 1024})
    error = refusal(team, body)
    assert (error["code"], error["param"]) == ("invalid_request", "hyperparameters.teacher_top_k")
