"""torch.export (.pt2) archives: no native code, programs torch itself could have written, and
under data/ only raw tensor records (as the configs torch.export.load reads declare them) or
pickles of tensors alone. Mirrors torch/export/pt2_archive/_package.py (torch 2.13)."""

import itertools
import json
import re
import zipfile

from app.files.formats.accepted import Detected, Purpose
from app.files.formats.archives import files as file_members
from app.files.formats.errors import EXPORT_ADVICE, UnsafeFile, unsupported
from app.files.formats.export_program import check_export_program
from app.files.formats.pickles import ScanRules, scan_zip
from app.files.formats.torch_formats import storage_meta
from file_rules.pickles import weights_only_allowed

MAX_JSON_MEMBER = 64 * 1024 * 1024  # torch.export's model.json carries stack traces


def detect_torch_export(zf: zipfile.ZipFile, root: str, purpose: Purpose) -> Detected:
    files = file_members(zf.infolist())
    records = {i.filename.removeprefix(f"{root}/"): i for i in files}  # as the loader names them
    if _read_member(zf, f"{root}/archive_format", 16).strip() != b"pt2":
        raise unsupported(purpose, "This zip has an archive_format record that is not 'pt2'.")
    if any(name.startswith("data/aotinductor/") for name in records):
        raise UnsafeFile(
            "This .pt2 holds AOTInductor-compiled native code, which torch.export.load "
            "would load and run; save the model with torch.export.save alone."
        )
    models = _model_names(records, purpose)
    for model in models:
        info = records[f"models/{model}.json"]
        check_export_program(_json_member(zf, info, MAX_JSON_MEMBER, purpose), info.filename)
    raw: set[str] = set()
    configs: set[str] = set()
    for model, kind in itertools.product(models, ("weights", "constants")):
        config = _config_record(records, model, kind, purpose)
        if config is not None:
            configs.add(config)
            raw |= _raw_records(zf, records[config], kind, purpose)
    rules = ScanRules(
        allowed=weights_only_allowed,
        # Every record under data/ but the configs is something torch.export.load may unpickle
        # unless its config says, without contradiction, that it is raw tensor bytes.
        loaded=lambda name: name.startswith(f"{root}/data/"),
        raw=lambda name: name.removeprefix(f"{root}/") in raw | configs,
        advice=EXPORT_ADVICE,
    )
    scan_zip(zf, rules, "", depth=0)
    meta = storage_meta([i for name, i in records.items() if name in raw])
    return Detected("torch_export", {"models": models} | meta)


def _model_names(records: dict[str, zipfile.ZipInfo], purpose: Purpose) -> list[str]:
    """torch.export.load loads every record under models/ as a program named by its path."""
    models = []
    for name in records:
        if not name.startswith("models/"):
            continue
        match = re.fullmatch(r"models/([A-Za-z0-9_.-]+)\.json", name)
        if match is None:
            raise UnsafeFile(
                f"This .pt2 holds '{name}' under models/, which torch.export.load would load "
                "as a program but torch.export.save never writes; re-export the model."
            )
        models.append(match.group(1))
    if not models:
        raise unsupported(purpose, "This .pt2 archive has no models/*.json program.")
    return models


def _config_record(
    records: dict[str, zipfile.ZipInfo], model: str, kind: str, purpose: Purpose
) -> str | None:
    """The config torch.export.load reads for ``model``'s weights or constants: none where a
    legacy data/<kind>/<model>.pt replaces it (that pickle is scanned like any other)."""
    if f"data/{kind}/{model}.pt" in records:
        return None
    config = f"data/{kind}/{model}_{kind}_config.json"
    if config not in records:
        raise unsupported(purpose, f"This .pt2 archive has no '{config}'.")
    return config


def _raw_records(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, kind: str, purpose: Purpose
) -> set[str]:
    """The records a weights/constants config declares as raw tensor bytes, which the loader
    reads with ``get_storage_from_record``, never with pickle. An entry the loader would unpickle
    (``use_pickle`` not false, or a custom or opaque object) is refused outright: torch writes
    those only for tensor subclasses and script objects, and unpickles them with
    weights_only=False."""
    entries = _json_member(zf, info, MAX_JSON_MEMBER, purpose).get("config")
    if not isinstance(entries, dict):
        raise unsupported(purpose, f"'{info.filename}' has no 'config' object.")
    prefix = "weight" if kind == "weights" else "tensor"
    raw = set()
    for fqn, payload in entries.items():
        path_name = payload.get("path_name") if isinstance(payload, dict) else None
        if not isinstance(path_name, str) or not re.fullmatch(rf"{prefix}_\d+", path_name):
            raise UnsafeFile(
                f"'{info.filename}' stores '{fqn}' as {str(path_name)[:100]!r}, which is not a "
                f"raw tensor record ({prefix}_<n>); {EXPORT_ADVICE}"
            )
        if payload.get("use_pickle") is not False:
            raise UnsafeFile(
                f"'{info.filename}' stores '{fqn}' as a pickle, which torch.export.load "
                f"unpickles with weights_only=False; {EXPORT_ADVICE}"
            )
        raw.add(f"data/{kind}/{path_name}")
    return raw


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
