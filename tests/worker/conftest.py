from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import S3Server, service_environment


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path) -> Iterator[dict[str, str]]:
    """This process as a worker on an S3 store of its own bucket, with a storage directory of
    its own: whatever it uses of the store it must have from the bucket."""
    bucket = s3_server.new_bucket()
    with service_environment(tmp_path / "worker", **s3_server.settings(bucket)) as env:
        yield env
