"""The S3 store: one bucket (under an optional key prefix) of any S3-compatible object storage,
through boto3. Large files go up in parts (``DISTILL_S3_MULTIPART_BYTES``); reads stream, and a
byte range is one ranged GET."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from app.config import Settings
from app.storage.base import CHUNK, ObjectMissing, Opened

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str = "", multipart_bytes: int = 64 << 20):
        self.client, self.bucket = client, bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.transfer = TransferConfig(
            multipart_threshold=multipart_bytes, multipart_chunksize=multipart_bytes
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Store":
        bucket = settings.s3_bucket or ""  # the settings refuse s3 without one
        return cls(client(settings), bucket, settings.s3_prefix, settings.s3_multipart_bytes)

    def local_path(self, key: str) -> None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if _missing(e):
                return False
            raise
        return True

    def put(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def move_in(self, key: str, path: Path) -> None:
        self.put(key, path)
        path.unlink()

    def get(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self.transfer)
            os.replace(tmp, dest)
        except ClientError as e:
            if _missing(e):
                raise ObjectMissing(key) from e
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def open(self, key: str, start: int = 0, stop: int | None = None) -> Opened:
        ranged = {} if start == 0 and stop is None else {"Range": _range(start, stop)}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **ranged)
        except ClientError as e:
            if _missing(e):
                raise ObjectMissing(key) from e
            raise
        return Opened(_chunks(response["Body"]), response["LastModified"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(f"{prefix.rstrip('/')}/")
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"].removeprefix(self.prefix)

    def _key(self, key: str) -> str:
        return self.prefix + key


def client(settings: Settings) -> Any:
    """A boto3 S3 client from the settings; credentials left unset fall back to boto3's standard
    chain (AWS_* variables, ~/.aws, an instance or pod role)."""
    options: dict[str, Any] = {"retries": {"mode": "standard", "max_attempts": 5}}
    if settings.s3_endpoint_url:
        # What S3-compatible servers (MinIO, Ceph, R2) all accept: path-style URLs, and the
        # checksums only where S3 requires them.
        options |= {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    key_id, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(**options),
    )


def _range(start: int, stop: int | None) -> str:
    return f"bytes={start}-" if stop is None else f"bytes={start}-{stop - 1}"


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING
