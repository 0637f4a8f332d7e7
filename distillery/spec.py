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

from distillery.errors import ConfigurationError
from distillery.types import File

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


def local_paths(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (dotted key, path) pairs of the spec's local files."""
    found = []
    for section, path_key, _, _ in LOCAL_FILE_KEYS:
        part = spec.get(section)
        if isinstance(part, Mapping) and part.get(path_key) is not None:
            found.append((f"{section}.{path_key}", str(part[path_key])))
    return found


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
