"""The Idempotency-Key's request hash is of the body the client sent."""

from app.jobs.service import request_hash
from app.jobs.spec import JobSpec

BODY = {
    "teacher": {"file_id": "file_a"},
    "data": {"train_file_id": "file_b"},
    "hyperparameters": {"epochs": 3, "temperature": 2.0},
}


class UpgradedSpec(JobSpec):
    """The spec as a later version might have it: one more field, with a default."""

    newer_option: bool = False


def test_a_field_added_later_with_a_default_keeps_the_hash() -> None:
    assert request_hash(UpgradedSpec.model_validate(BODY)) == request_hash(
        JobSpec.model_validate(BODY)
    )


def test_key_order_does_not_matter_and_values_do() -> None:
    reordered = {"hyperparameters": BODY["hyperparameters"], **BODY}
    assert request_hash(JobSpec.model_validate(reordered)) == request_hash(
        JobSpec.model_validate(BODY)
    )
    changed = {**BODY, "hyperparameters": {"epochs": 4, "temperature": 2.0}}
    assert request_hash(JobSpec.model_validate(changed)) != request_hash(
        JobSpec.model_validate(BODY)
    )
