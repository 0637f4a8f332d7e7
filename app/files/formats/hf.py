"""Hugging Face model directories, zipped or tarred: a config.json with safetensors weights beside
it, no remote code and no pickles (file_rules/archives.py, which the worker applies too)."""

import json
import posixpath
import re
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from app.files.formats.accepted import Detected
from app.files.formats.archives import ArchiveGuard
from app.files.formats.causal_lm import Weights as _Weights
from app.files.formats.causal_lm import causal_lm_meta, is_causal_lm
from app.files.formats.errors import (
    ARCHIVE_ADVICE,
    UnsafeFile,
    UnsupportedFormat,
    readable,
    unsupported,
)
from app.files.formats.pickles import ScanRules, scan_member
from app.files.formats.safetensors import SafetensorsError, read_safetensors
from file_rules.archives import ArchiveRefused, check_model_file, data_filtered
from file_rules.pickles import PICKLE_SUFFIXES, weights_only_allowed
from file_rules.remote_code import CONFIG_FILES, remote_code_keys

MAX_CONFIG_JSON = 16 * 1024 * 1024

_HF_WEIGHTS = re.compile(r"model(-\d+-of-\d+)?\.safetensors")
_TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
    }
)


def hf_root(names: list[str] | set[str]) -> str | None:
    """The folder holding config.json: the archive root, or its one top-level folder."""
    if "config.json" in names:
        return ""
    roots = [n.removesuffix("/config.json") for n in names if n.count("/") == 1]
    roots = [r for r in roots if f"{r}/config.json" in names]
    return roots[0] if len(roots) == 1 else None


def detect_hf_zip(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> Detected:
    scan = _HfScan(spool_dir=None)  # zip member streams seek cheaply enough
    for info in files:
        with zf.open(info) as member:
            scan.add(info.filename, info.file_size, member)
    return scan.result()


def detect_hf_tar(path: Path, size: int) -> Detected:
    scan = _HfScan(spool_dir=path.parent)
    with readable("teacher", "tar archive"), tarfile.open(path, "r:*") as tar:
        guard = ArchiveGuard(size, "tar archive")
        for member in tar:
            special = not (member.isreg() or member.isdir() or member.issym() or member.islnk())
            link = member.issym() or member.islnk()
            guard.admit(member.name, member.size, is_dir=member.isdir(), link=link, special=special)
            stream = tar.extractfile(_data_filtered(member)) if member.isreg() else None
            if stream is not None:
                with stream:
                    scan.add(member.name, member.size, stream)
    return scan.result()


def _data_filtered(member: tarfile.TarInfo) -> tarfile.TarInfo:
    try:
        return data_filtered(member)
    except ArchiveRefused as exc:
        raise UnsafeFile(str(exc)) from exc


class _HfScan:
    """Collects what an HF model directory needs while its members stream past once."""

    def __init__(self, spool_dir: Path | None) -> None:
        self.spool_dir = spool_dir
        self.names: set[str] = set()
        self.configs: dict[str, dict] = {}
        self.weights: dict[str, _Weights] = {}
        self.rules = ScanRules(
            allowed=weights_only_allowed,
            loaded=lambda name: name.endswith(PICKLE_SUFFIXES),
            raw=lambda name: name.endswith(".safetensors"),
            advice=ARCHIVE_ADVICE,
        )

    def add(self, name: str, size: int, stream: IO[bytes]) -> None:
        name = name.removeprefix("./")  # `tar -C model .` writes ./config.json
        try:
            check_model_file(name)
        except ArchiveRefused as exc:
            raise UnsafeFile(str(exc)) from exc
        self.names.add(name)
        if name.count("/") <= 1 and posixpath.basename(name) in CONFIG_FILES:
            self.configs[name] = _parse_config(stream, size, name)
        elif name.endswith(".safetensors"):
            try:
                self.weights[name] = _Weights.of(read_safetensors(stream, size, name))
            except SafetensorsError as exc:
                raise UnsupportedFormat(f"The archive's {exc}.") from exc
        elif size:
            scan_member(stream, name, self.rules, name, 0, self.spool_dir)

    def result(self) -> Detected:
        root = hf_root(self.names)
        if root is None:
            raise unsupported(
                "teacher",
                "This archive has no config.json at its root or in "
                "one top-level folder, so it is not a Hugging Face model.",
            )
        prefix = f"{root}/" if root else ""
        for name in CONFIG_FILES:
            if keys := remote_code_keys(self.configs.get(prefix + name, {})):
                raise UnsafeFile(
                    f"'{prefix}{name}' sets {' and '.join(keys)}: loading the model would need "
                    "trust_remote_code and run the archive's Python code, which Distillery "
                    "never enables; only models built into transformers are accepted."
                )
        files = {n.removeprefix(prefix) for n in self.names if n.startswith(prefix)}
        if not any(_HF_WEIGHTS.fullmatch(f) for f in files):
            raise unsupported(
                "teacher",
                "The archive's config.json has no weights beside it (model.safetensors, or "
                "safetensors shards); save the model with save_pretrained.",
            )
        config = self.configs[prefix + "config.json"]
        meta = _hf_meta(config, root, files)
        if is_causal_lm(config):
            tokenizer_config = self.configs.get(prefix + "tokenizer_config.json", {})
            weights = [
                w for n, w in self.weights.items() if _HF_WEIGHTS.fullmatch(n[len(prefix) :])
            ]
            meta |= causal_lm_meta(config, tokenizer_config, files, weights)
        return Detected("hf_archive", meta)


def _parse_config(stream: IO[bytes], size: int, name: str) -> dict:
    if size > MAX_CONFIG_JSON:
        raise UnsupportedFormat(f"'{name}' is larger than {MAX_CONFIG_JSON} bytes.")
    try:
        config = json.loads(stream.read(MAX_CONFIG_JSON))
    except (ValueError, RecursionError) as exc:
        raise UnsupportedFormat(f"'{name}' is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise UnsupportedFormat(f"'{name}' must hold a JSON object.")
    return config


def _hf_meta(config: dict, root: str, files: set[str]) -> dict:
    labels = config.get("id2label")
    return {
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "task": "classification",
        "num_labels": len(labels) if isinstance(labels, dict) else None,
        "has_tokenizer": bool(files & _TOKENIZER_FILES),
        "root": root,
        "weights": "safetensors",
    }
