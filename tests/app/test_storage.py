"""The two stores behind one interface: a local directory, and S3 over real HTTP (moto's server
mode on 127.0.0.1; no real S3 is reachable from the test machines). Every test runs on both."""

import hashlib
import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.db import discard_on_rollback, session_scope
from app.storage import ObjectMissing, Store
from app.storage.base import read_bytes
from app.storage.local import LocalStore
from app.storage.s3 import S3Store
from tests.conftest import S3Server

MIB = 1024 * 1024
PART = 5 * MIB  # the smallest part S3 accepts, and the smallest DISTILL_S3_MULTIPART_BYTES


def s3_settings(server: S3Server, bucket: str, **more: object) -> Settings:
    env = {k.removeprefix("DISTILL_").lower(): v for k, v in server.settings(bucket).items()}
    return Settings(**(env | more))  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "local":
        yield LocalStore(tmp_path / "store")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    settings = s3_settings(
        server, server.new_bucket(), s3_prefix="team-a/", s3_multipart_bytes=PART
    )
    yield S3Store.from_settings(settings)


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(3 * 1024 + 7))
    return path


def test_put_then_get_gives_the_same_bytes(store: Store, blob: Path, tmp_path: Path) -> None:
    assert not store.exists("files/file_a")
    store.put("files/file_a", blob)
    assert store.exists("files/file_a")
    assert blob.exists()  # put copies
    store.get("files/file_a", tmp_path / "out" / "copy.bin")
    assert (tmp_path / "out" / "copy.bin").read_bytes() == blob.read_bytes()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.bin"]  # no temporary left


def test_a_ranged_read_gives_exactly_those_bytes(store: Store, blob: Path) -> None:
    data = blob.read_bytes()
    store.put("jobs/job_a/artifacts/student.pt", blob)
    key = "jobs/job_a/artifacts/student.pt"
    assert b"".join(store.open(key, 10, 20).chunks) == data[10:20]
    assert b"".join(store.open(key, len(data) - 5).chunks) == data[-5:]
    assert b"".join(store.open(key).chunks) == data
    assert store.open(key).modified.tzinfo is not None


def test_an_object_is_replaced_whole(store: Store, blob: Path, tmp_path: Path) -> None:
    store.put_bytes("jobs/job_a/checkpoint.pt", b"first")
    store.put("jobs/job_a/checkpoint.pt", blob)
    assert read_bytes(store, "jobs/job_a/checkpoint.pt") == blob.read_bytes()


def test_move_in_takes_the_file(store: Store, blob: Path) -> None:
    data = blob.read_bytes()
    store.move_in("files/file_b", blob)
    assert not blob.exists()
    assert read_bytes(store, "files/file_b") == data


def test_delete_removes_the_object_and_a_missing_one_is_fine(store: Store, blob: Path) -> None:
    store.put("files/file_c", blob)
    store.delete("files/file_c")
    assert not store.exists("files/file_c")
    store.delete("files/file_c")
    with pytest.raises(ObjectMissing):
        store.open("files/file_c")


def test_keys_lists_every_object_under_a_folder_and_nothing_else(store: Store, blob: Path) -> None:
    for key in (
        "cache/teacher/a/signals/k/shard-00000",
        "cache/teacher/a/signals/k/manifest.json",
        "cache/teacher/a/x.safetensors",
        "cache/teacher/ab/y",
        "cache/teacher/b/z",
    ):
        store.put(key, blob)  # fmt: skip

    assert sorted(store.keys("cache/teacher/a")) == [
        "cache/teacher/a/signals/k/manifest.json",
        "cache/teacher/a/signals/k/shard-00000",
        "cache/teacher/a/x.safetensors",
    ]
    assert sorted(store.keys("cache/teacher/a/signals/")) == sorted(
        store.keys("cache/teacher/a/signals")
    )
    assert list(store.keys("cache/teacher/none")) == []


def test_the_local_store_lists_no_file_being_written(tmp_path: Path, blob: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("cache/teacher/a/whole", blob)
    being_written = store.local_path("cache/teacher/a/next").with_name(f"next.{'0' * 32}.tmp")
    being_written.write_bytes(b"half")

    assert list(store.keys("cache/teacher/a")) == ["cache/teacher/a/whole"]


def test_reading_a_missing_object_raises_and_writes_nothing(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectMissing):
        store.get("files/none", tmp_path / "dest" / "none")
    assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []
    with pytest.raises(ObjectMissing):
        store.open("files/none", 0, 10)


def test_a_rollback_deletes_what_the_work_stored(
    store: Store, blob: Path, service_env: dict[str, str]
) -> None:
    with pytest.raises(RuntimeError), session_scope() as session:
        store.put("files/rolled_back", blob)
        discard_on_rollback(session, partial(store.delete, "files/rolled_back"))
        raise RuntimeError("the commit failed")
    assert not store.exists("files/rolled_back")
    with session_scope() as session:
        store.put("files/committed", blob)
        discard_on_rollback(session, partial(store.delete, "files/committed"))
    assert store.exists("files/committed")


def test_the_local_store_works_in_place(tmp_path: Path, blob: Path) -> None:
    store = LocalStore(tmp_path / "store")
    own = store.local_path("jobs/job_a/artifacts/student.pt")
    assert own == (tmp_path / "store" / "jobs/job_a/artifacts/student.pt").resolve()
    own.parent.mkdir(parents=True)
    own.write_bytes(b"written by the engine")
    store.put("jobs/job_a/artifacts/student.pt", own)  # its own file: nothing to do
    assert own.read_bytes() == b"written by the engine"
    with pytest.raises(ValueError):
        store.local_path("../outside")


def test_s3_uploads_a_large_file_in_parts(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    store = S3Store.from_settings(
        s3_settings(s3_server, bucket, s3_prefix="distill", s3_multipart_bytes=PART)
    )
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * PART + MIB))
    store.put("files/file_big", big)

    s3 = s3_server.client()
    head = s3.head_object(Bucket=bucket, Key="distill/files/file_big")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert head["ContentLength"] == big.stat().st_size
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["distill/files/file_big"]  # under the prefix
    store.get("files/file_big", tmp_path / "back.bin")
    digest = hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
    middle = b"".join(store.open("files/file_big", PART - 3, PART + 3).chunks)
    assert middle == big.read_bytes()[PART - 3 : PART + 3]  # a range across two parts


def test_s3_secrets_stay_out_of_the_settings_repr(s3_server: S3Server) -> None:
    assert "moto-secret" not in repr(s3_settings(s3_server, "unused"))


def test_the_s3_backend_needs_a_bucket() -> None:
    with pytest.raises(ValidationError, match="DISTILL_S3_BUCKET"):
        Settings(storage_backend="s3")
    with pytest.raises(ValidationError):
        Settings(storage_backend="s3", s3_bucket="b", s3_multipart_bytes=MIB)  # under 5 MiB
