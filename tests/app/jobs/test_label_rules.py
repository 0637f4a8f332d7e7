"""The label rules (jobspec.requirements) as a submit answers them, from the uploads' facts: the
same rules the engine checks on the loaded data, so the API accepts no job the worker refuses."""

from typing import Any

from tests.conftest import Client
from tests.helpers.api import error_of


def spec(files: dict[str, str], train: str, validation: str, **more: Any) -> dict[str, Any]:
    return {
        "teacher": {"file_id": files["teacher"], "arch": {"arch": "mlp", "hidden_sizes": []}},
        "data": {"train_file_id": files[train], "validation_file_id": files[validation]},
        **more,
    }


def test_val_loss_with_a_label_term_needs_a_labelled_validation_file(
    team: Client, files: dict[str, str]
) -> None:
    on_loss = {"alpha": 0.5, "early_stopping": {"metric": "val_loss"}}
    body = spec(files, "labelled", "unlabelled", hyperparameters=on_loss)

    error = error_of(team.post("/v1/jobs", json=body), 422)
    assert (error["code"], error["param"]) == (
        "labels_required",
        "hyperparameters.early_stopping.metric",
    )
    assert team.get("/v1/jobs").json()["data"] == []

    labelled = spec(files, "labelled", "labelled", hyperparameters=on_loss)
    assert team.post("/v1/jobs/validate", json=labelled).status_code == 200


def test_swept_alphas_of_one_need_no_labels(team: Client, files: dict[str, str]) -> None:
    # hyperparameters.alpha keeps its default 0.5, but the sweep's values replace it.
    body = spec(files, "unlabelled", "labelled", sweep={"alpha": [1.0]})
    response = team.post("/v1/jobs/validate", json=body)
    assert response.status_code == 200, response.text

    body["sweep"] = {"alpha": [1.0, 0.5]}
    error = error_of(team.post("/v1/jobs/validate", json=body), 422)
    assert (error["code"], error["param"]) == ("labels_required", "sweep.alpha")
