"""``resources`` and ``distributed``: how many devices of one host a job takes, and how it
spreads over them."""

import pytest
from pydantic import ValidationError

from jobspec import MAX_DEVICES, JobSpec

BASE = {"teacher": {"file_id": "file_t"}, "data": {"train_file_id": "file_d"}}


def test_a_job_takes_one_device_and_ddp_unless_it_asks() -> None:
    spec = JobSpec.model_validate(BASE)
    assert (spec.resources.devices, spec.distributed.strategy) == (1, "ddp")
    wide = JobSpec.model_validate(
        BASE | {"resources": {"devices": 4}, "distributed": {"strategy": "fsdp"}}
    )
    assert (wide.resources.devices, wide.distributed.strategy) == (4, "fsdp")


@pytest.mark.parametrize(
    "resources",
    [{"devices": 0}, {"devices": MAX_DEVICES + 1}, {"devices": "2"}, {"devices": 2.0},
     {"devices": True}, {"gpus": 2}],
)  # fmt: skip
def test_devices_is_a_whole_number_of_one_host(resources: dict) -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(BASE | {"resources": resources})
    assert error.value.errors()[0]["loc"][0] == "resources"


@pytest.mark.parametrize("distributed", [{"strategy": "deepspeed"}, {"strategy": "ddp", "x": 1}])
def test_strategy_is_ddp_or_fsdp(distributed: dict) -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(BASE | {"distributed": distributed})
    assert error.value.errors()[0]["loc"][0] == "distributed"
