"""Job specs that name local files: they are uploaded first and replaced by their file ids.

Anywhere a spec takes a file id it may take a local path instead::

    {"teacher": {"path": "teacher.pt"},                      # -> teacher.file_id
     "data": {"train_path": "train.npz",                     # -> data.train_file_id
              "validation_path": "val.npz"}}                 # -> data.validation_file_id

Relative paths are read from ``base_dir`` (the spec file's folder, for ``distill jobs submit``),
else from the current directory. A path named twice is uploaded once, and a file whose bytes the
team already has on the server (same sha256 and purpose) is not uploaded again (``reuse``).
"""

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

import jobspec
from distillery.errors import ConfigurationError, InvalidSpecError
from distillery.types import File
from jobspec import errors as spec_errors

if TYPE_CHECKING:
    from distillery.client import Client

# Told of each local file: its path, the file on the server, and whether that was already there.
OnUpload = Callable[[Path, File, bool], Any]

# (section, the key holding a local path, the key for the file id, the file's purpose)
LOCAL_FILE_KEYS = (
    ("teacher", "path", "file_id", "teacher"),
    ("data", "train_path", "train_file_id", "dataset"),
    ("data", "validation_path", "validation_file_id", "dataset"),
)


# Stands for a local file's id while the spec is checked, before anything is uploaded.
NOT_YET_UPLOADED = "file_" + "0" * 26


def check(spec: Mapping[str, Any]) -> None:
    """Check the spec's shape with the job spec model the server itself is built on (jobspec)
    before anything is uploaded: a typo costs no upload. Local paths stand in for the file ids
    they will become. The server checks everything again at submit (the files, and the spec
    against them), so this catches early what it can, and never lets through what it would not.
    Raises ``InvalidSpecError`` (an ``UnprocessableError``, code ``invalid_request``) naming the
    field at fault, as the server's answer would."""
    stand_in = copy.deepcopy(dict(spec))
    for section, path_key, id_key, _ in LOCAL_FILE_KEYS:
        part = stand_in.get(section)
        if isinstance(part, dict) and part.get(path_key) is not None:
            del part[path_key]
            part.setdefault(id_key, NOT_YET_UPLOADED)
    try:
        jobspec.JobSpec.model_validate(stand_in)
    except ValidationError as e:
        first = spec_errors.first_error(spec_errors.body_errors(e))
        message, param = spec_errors.describe(first, stand_in, jobspec.JobSpec, local_paths=True)
        raise InvalidSpecError(message, param=param) from None


def upload_local_files(
    client: "Client",
    spec: Mapping[str, Any],
    *,
    base_dir: str | Path | None = None,
    on_upload: OnUpload | None = None,
    reuse: bool = True,
) -> dict[str, Any]:
    """A copy of ``spec`` with each local path uploaded and replaced by its file id."""
    resolved = copy.deepcopy(dict(spec))
    uploaded: dict[tuple[Path, str], File] = {}
    for section, path_key, id_key, purpose in LOCAL_FILE_KEYS:
        part = resolved.get(section)
        if not isinstance(part, dict) or part.get(path_key) is None:
            continue
        if part.get(id_key) is not None:
            raise ConfigurationError(
                f"{section}: give {id_key} or {path_key}, not both.", param=f"{section}.{path_key}"
            )
        path = Path(base_dir or ".") / Path(part.pop(path_key)).expanduser()
        if not path.is_file():
            raise ConfigurationError(
                f"{section}.{path_key}: no such file {path}.", param=f"{section}.{path_key}"
            )
        key = (path.resolve(), purpose)
        if key not in uploaded:
            existing = client.files.find(path, purpose) if reuse else None
            uploaded[key] = existing or client.files.upload(path, purpose)
            if on_upload:
                on_upload(path, uploaded[key], existing is not None)
        part[id_key] = uploaded[key].id
    return resolved


def merge(spec: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with ``fields`` on top; a dict field is merged one level deep, so
    ``hyperparameters={"epochs": 2}`` keeps the spec's other hyperparameters."""
    merged = copy.deepcopy(dict(spec or {}))
    for key, value in fields.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged
