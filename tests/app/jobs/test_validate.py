"""``POST /v1/jobs/validate``: a submit's checks without the job. It answers the full, defaulted
spec or exactly the error a submit would answer, and leaves nothing behind."""

from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from tests.conftest import Client
from tests.helpers.api import error_of, upload


def spec(files: dict[str, str], data: str = "labelled", **more: Any) -> dict[str, Any]:
    return {
        "teacher": {"file_id": files["teacher"], "arch": {"arch": "mlp", "hidden_sizes": []}},
        "data": {"train_file_id": files[data]},
        **more,
    }


def test_a_valid_spec_answers_the_defaulted_spec_and_creates_nothing(
    team: Client, files: dict[str, str]
) -> None:
    body = spec(files, hyperparameters={"epochs": 3})
    response = team.post("/v1/jobs/validate", json=body, headers={"Idempotency-Key": "k"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "job_validation"
    assert answer["task"] == "classification"
    assert answer["spec"]["hyperparameters"]["epochs"] == 3
    assert answer["spec"]["hyperparameters"]["batch_size"] == 64  # a default, filled in
    assert answer["spec"]["student"] == {
        "arch": "mlp",
        "hidden_sizes": [128],
        "activation": "relu",
        "dropout": 0.0,
    }
    assert team.get("/v1/jobs").json()["data"] == []
    # No idempotency record either: the key is free for a different body.
    other = spec(files, hyperparameters={"epochs": 4})
    submitted = team.post("/v1/jobs", json=other, headers={"Idempotency-Key": "k"})
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["spec"]["hyperparameters"]["epochs"] == 4


def test_validate_warns_of_a_student_no_smaller_and_of_a_split_validation_set(
    team: Client, files: dict[str, str]
) -> None:
    # The teacher holds 8 parameters; a 4 -> 128 -> 2 MLP has at least 898.
    answer = team.post("/v1/jobs/validate", json=spec(files)).json()
    warnings = {w["code"]: w for w in answer["warnings"]}
    assert set(warnings) == {"student_not_smaller", "validation_may_overlap_teacher_training"}
    assert warnings["student_not_smaller"]["param"] == "student"
    assert "898" in warnings["student_not_smaller"]["message"]
    assert warnings["validation_may_overlap_teacher_training"]["param"] == "data.validation_split"


def test_validate_gives_no_warning_for_a_smaller_student_and_a_validation_file(
    team: Client, files: dict[str, str]
) -> None:
    body = spec(files, student={"arch": "mlp", "hidden_sizes": []})  # 4 x 2 + 2 = 10 parameters
    body["data"]["validation_file_id"] = files["labelled"]
    body["teacher"]["file_id"] = upload(
        team,
        "big.safetensors",  # 16 parameters
        safetensors.numpy.save({"w": np.zeros((4, 4), dtype=np.float32)}),
        "teacher",
    )
    answer = team.post("/v1/jobs/validate", json=body).json()
    assert answer["warnings"] == [], answer


@pytest.mark.parametrize(
    ("change", "status", "code", "param"),
    [
        ({"teacher": {"file_id": "file_missing"}}, 404, "not_found", "teacher.file_id"),
        ({"data": "unlabelled"}, 422, "labels_required", "hyperparameters.alpha"),
        (
            {"student": {"arch": "hf", "config": {"model_type": "bert"}}},
            422,
            "unsupported_arch",
            "student.arch",
        ),
        ({"hyperparameters": {"epochs": 0}}, 422, "invalid_request", "hyperparameters.epochs"),
        (
            {"student": {"arch": "hf", "config": {"model_type": "bert", "auto_map": {}}}},
            422,
            "invalid_request",
            "student.config",
        ),
    ],
)
def test_a_refused_spec_answers_what_a_submit_answers(
    team: Client, files: dict[str, str], change: dict[str, Any], status: int, code: str, param: str
) -> None:
    body = spec(files, data=change.pop("data", "labelled"), **change)
    validated = error_of(team.post("/v1/jobs/validate", json=body), status)
    assert (validated["code"], validated["param"]) == (code, param)
    assert validated == error_of(team.post("/v1/jobs", json=body), status)
    assert team.get("/v1/jobs").json()["data"] == []


def test_another_teams_file_is_not_found(
    team: Client, admin: Client, files: dict[str, str]
) -> None:
    error = error_of(admin.post("/v1/jobs/validate", json=spec(files)), 404)
    assert error["param"] == "teacher.file_id"


def test_devices_beyond_the_declared_fleet_are_refused_and_within_it_echoed(
    team: Client, files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.config import get_settings

    monkeypatch.setenv("DISTILL_FLEET_DEVICES_PER_HOST", "4")
    get_settings.cache_clear()
    try:
        refused = team.post("/v1/jobs/validate", json=spec(files, resources={"devices": 8}))
        error = error_of(refused, 422)
        assert (error["code"], error["param"]) == ("invalid_request", "resources.devices")
        assert "largest worker host of this server has 4 devices" in error["message"]
        fits = team.post("/v1/jobs/validate", json=spec(files, resources={"devices": 4}))
        assert fits.status_code == 200, fits.text
        assert fits.json()["spec"]["resources"] == {"devices": 4}
        assert fits.json()["spec"]["distributed"] == {"strategy": "ddp"}
    finally:
        monkeypatch.delenv("DISTILL_FLEET_DEVICES_PER_HOST")
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("more", "named"),
    [
        ({"sweep": {"alpha": [0.3, 0.7]}}, "sweeps"),
        ({"losses": {"hidden": {"layers": [[0, 0]]}}}, "layer matching"),
        ({"hyperparameters": {"precision": "fp16"}}, "precision fp16"),
    ],
)
def test_what_several_devices_cannot_do_yet_is_refused_at_submit(
    team: Client, files: dict[str, str], more: dict, named: str
) -> None:
    body = spec(files, resources={"devices": 2}, **more)
    error = error_of(team.post("/v1/jobs/validate", json=body), 422)
    assert (error["code"], error["param"]) == ("unsupported_distributed", "resources.devices")
    assert named in error["message"]
    alone = spec(files, resources={"devices": 1}, **more)
    assert team.post("/v1/jobs/validate", json=alone).status_code == 200
