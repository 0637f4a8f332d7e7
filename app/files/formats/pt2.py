"""torch.export (.pt2) archives: no native code, programs torch itself could have written, and
only raw or tensor-only records under data/."""

import json
import posixpath
import re
import zipfile

from app.files.formats.accepted import Detected, Purpose
from app.files.formats.archives import files as file_members
from app.files.formats.errors import EXPORT_ADVICE, UnsafeFile, unsupported
from app.files.formats.export_program import check_export_program
from app.files.formats.pickles import ScanRules, scan_zip
from app.files.formats.torch_formats import storage_meta
from app.files.pickle_scan import weights_only_allowed

MAX_JSON_MEMBER = 64 * 1024 * 1024  # torch.export's model.json carries stack traces


def detect_torch_export(zf: zipfile.ZipFile, root: str, purpose: Purpose) -> Detected:
    files = file_members(zf.infolist())
    if _read_member(zf, f"{root}/archive_format", 16).strip() != b"pt2":
        raise unsupported(purpose, "This zip has an archive_format record that is not 'pt2'.")
    if any(i.filename.startswith(f"{root}/data/aotinductor/") for i in files):
        raise UnsafeFile(
            "This .pt2 holds AOTInductor-compiled native code, which torch.export.load "
            "would load and run; save the model with torch.export.save alone."
        )
    models = [
        i for i in files if re.fullmatch(rf"{re.escape(root)}/models/[^/]+\.json", i.filename)
    ]
    if not models:
        raise unsupported(purpose, "This .pt2 archive has no models/*.json program.")
    for info in models:
        check_export_program(_json_member(zf, info, MAX_JSON_MEMBER, purpose), info.filename)
    raw = _raw_records(zf, root, files, purpose)
    rules = ScanRules(
        allowed=weights_only_allowed,
        # torch.export.load hands every non-raw record under data/ to torch.load or pickle.loads.
        loaded=lambda name: name.startswith(f"{root}/data/") and not name.endswith(".json"),
        raw=lambda name: name in raw or name.endswith(".json"),
        advice=EXPORT_ADVICE,
    )
    scan_zip(zf, rules, "", depth=0)
    meta = storage_meta([i for i in files if i.filename in raw])
    return Detected("torch_export", {"models": [_stem(i.filename) for i in models]} | meta)


def _raw_records(
    zf: zipfile.ZipFile, root: str, files: list[zipfile.ZipInfo], purpose: Purpose
) -> set[str]:
    """Records the weights/constants configs declare as raw tensor bytes (``use_pickle`` false);
    the loader reads those with ``torch.frombuffer``-like calls, never with pickle."""
    raw: set[str] = set()
    config = re.compile(rf"{re.escape(root)}/data/(weights|constants)/[^/]+_config\.json")
    for info in files:
        match = config.fullmatch(info.filename)
        if not match:
            continue
        entries = _json_member(zf, info, MAX_JSON_MEMBER, purpose).get("config", {})
        for payload in entries.values() if isinstance(entries, dict) else ():
            path_name = payload.get("path_name") if isinstance(payload, dict) else None
            if isinstance(payload, dict) and _is_raw_payload(payload, path_name):
                raw.add(f"{root}/data/{match.group(1)}/{path_name}")
    return raw


def _is_raw_payload(payload: dict, path_name: object) -> bool:
    # Mirrors torch/export/pt2_archive/_package.py: weight_* and tensor_* records without
    # use_pickle are raw bytes; custom_obj_* and opaque_obj_* are always unpickled.
    return (
        isinstance(path_name, str)
        and payload.get("use_pickle") is False
        and path_name.startswith(("weight_", "tensor_"))
        and "/" not in path_name
    )


def _read_member(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    with zf.open(name) as f:
        return f.read(limit)


def _json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, purpose: Purpose) -> dict:
    if info.file_size > limit:
        raise unsupported(purpose, f"'{info.filename}' is larger than {limit} bytes.")
    try:
        with zf.open(info) as f:
            value = json.loads(f.read(limit))
    except (ValueError, RecursionError) as exc:
        raise unsupported(purpose, f"'{info.filename}' is not valid JSON ({exc}).") from exc
    if not isinstance(value, dict):
        raise unsupported(purpose, f"'{info.filename}' must hold a JSON object.")
    return value


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name))[0]
