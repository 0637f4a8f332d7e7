"""The checkpoint of a job trained on several ranks: ``torch.distributed.checkpoint`` (DCP), each
rank writing its own shard file, packed into one uncompressed tar at the job's
``checkpoint_path``, so that the worker ships one file as it does for a one-device job.

DCP's own format pickles its metadata (``.metadata``) and reads any value that is not a tensor
with ``torch.load(weights_only=False)``: loading such a folder would run whatever a tampered file
holds. Here nothing is unpickled: the metadata is JSON (``metadata.json``, written and read by
the storage classes below), the state handed to DCP is tensors only (the rest of the training
state is JSON, ``state.json``), and DCP reads the shard files' tensors with
``torch.load(weights_only=True)``. An archive holding anything else (another name, a link, a
folder, a path out of its folder) or metadata naming anything but tensors is refused before a
byte of it is read as a checkpoint.
"""

import json
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter, _StorageInfo
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from worker.engine.artifacts import atomic_write
from worker.engine.checkpoint import VERSION, ForeignCheckpoint, TrainingState
from worker.engine.errors import EngineError, last_line
from worker.engine.runs import TrainingRun

# A student and its optimizer, built as a run's are.
Trainable = tuple[torch.nn.Module, torch.optim.Optimizer]

if TYPE_CHECKING:
    from worker.engine.distributed import Gang

STATE = "state.json"  # the training state's plain fields
METADATA = "metadata.json"  # DCP's metadata: which tensor chunk lies where
_SHARD = re.compile(r"__\d{1,5}_\d{1,5}\.distcp")  # one per rank (FileSystemWriter's names)
MAX_MEMBERS = 1 + 1 + 2 * 4096
SEP = "/"  # between the levels of a flattened state (parameter names hold dots)
_DTYPES = {
    str(t): t
    for t in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16,
        torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
    )
}  # fmt: skip


class UnsafeCheckpoint(Exception):
    """An archive or a metadata file that is not what this module writes."""


# -- the folder: DCP with JSON metadata ---------------------------------------------------------


class _JsonWriter(FileSystemWriter):
    """DCP's file writer, with its metadata written as JSON instead of pickled."""

    def finish(self, metadata: Metadata, results: list[list[Any]]) -> None:
        storage = [wr for results_of_rank in results for wr in results_of_rank]
        tensors = {}
        for fqn, item in metadata.state_dict_metadata.items():
            if not isinstance(item, TensorStorageMetadata):
                raise TypeError(f"{fqn} is not a tensor: only tensors go into a checkpoint")
            tensors[fqn] = {
                "dtype": str(item.properties.dtype),
                "size": list(item.size),
                "chunks": [[list(c.offsets), list(c.sizes)] for c in item.chunks],
            }
        plain = {
            "version": metadata.version,
            "tensors": tensors,
            "storage": [
                {
                    "fqn": wr.index.fqn,
                    "offset": None if wr.index.offset is None else list(wr.index.offset),
                    "index": wr.index.index,
                    "path": wr.storage_data.relative_path,
                    "start": wr.storage_data.offset,
                    "length": wr.storage_data.length,
                }
                for wr in storage
            ],
        }
        text = json.dumps(plain)
        atomic_write(Path(self.path) / METADATA, lambda tmp: _write_text(tmp, text))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


class _JsonReader(FileSystemReader):
    """DCP's file reader, reading the metadata ``_JsonWriter`` wrote; nothing is unpickled."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        try:
            plain = json.loads((Path(self.path) / METADATA).read_text())
            metadata = _metadata(plain)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UnsafeCheckpoint(f"unreadable metadata: {e!r}") from e
        metadata.storage_meta = StorageMeta(load_id=self.load_id)
        return metadata


def _metadata(plain: dict) -> Metadata:
    tensors: dict[str, Any] = {}
    for fqn, item in plain["tensors"].items():
        dtype = _DTYPES.get(item["dtype"])
        if dtype is None:
            raise ValueError(f"{fqn}: dtype {item['dtype']!r}")
        tensors[str(fqn)] = TensorStorageMetadata(
            properties=TensorProperties(dtype=dtype),
            size=torch.Size(_ints(item["size"])),
            chunks=[
                ChunkStorageMetadata(torch.Size(_ints(o)), torch.Size(_ints(s)))
                for o, s in item["chunks"]
            ],
        )
    storage = {}
    for entry in plain["storage"]:
        path = str(entry["path"])
        if not _SHARD.fullmatch(path):
            raise ValueError(f"a shard file named {path!r}")
        offset = None if entry["offset"] is None else torch.Size(_ints(entry["offset"]))
        index = MetadataIndex(str(entry["fqn"]), offset, entry["index"])
        start, length = _ints([entry["start"], entry["length"]])
        storage[index] = _StorageInfo(path, start, length)
    return Metadata(tensors, storage_data=storage, version=plain.get("version"))


def _ints(values: Any) -> list[int]:
    if not isinstance(values, list) or not all(type(v) is int and v >= 0 for v in values):
        raise ValueError(f"not a list of sizes: {values!r}")
    return values


class _TensorsOnly(DefaultLoadPlanner):
    """Reads tensors; a value of any other kind would be unpickled, so it is refused (the
    metadata reader lets none through; this is the second lock)."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise UnsafeCheckpoint(f"{read_item.dest_index.fqn} is not a tensor")


def save_folder(folder: Path, tensors: dict[str, torch.Tensor], group: Any) -> None:
    """Every rank writes its shards of ``tensors`` (a flat dict) into ``folder``; a tensor that
    every rank holds whole is written once. Collective over ``group``."""
    dcp.save(tensors, storage_writer=_JsonWriter(folder, sync_files=False), process_group=group)


def load_folder(folder: Path, tensors: dict[str, torch.Tensor], group: Any) -> None:
    """Fill ``tensors`` (a flat dict of this rank's tensors, sharded or whole) in place from
    ``folder``. Collective over ``group``."""
    try:
        dcp.load(
            tensors, storage_reader=_JsonReader(folder), planner=_TensorsOnly(), process_group=group
        )
    except CheckpointException as e:  # a BaseException: the reader's errors, from every rank
        raise UnsafeCheckpoint(f"unreadable shards ({last_line(e)})") from e


# -- nested state <-> flat tensors --------------------------------------------------------------


def flatten(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{"models": {"student": {"fc.weight": t}}}`` as ``{"models/student/fc.weight": t}``;
    every leaf must be a tensor."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, name + SEP)
        elif isinstance(value, torch.Tensor):
            flat[name] = value
        else:
            raise TypeError(f"{name} is a {type(value).__name__}, not a tensor")
    return flat


def unflatten(flat: dict[str, torch.Tensor], prefix: str) -> dict:
    """The part of ``flat`` under ``prefix``, nested again (the inverse of ``flatten``)."""
    nested: dict = {}
    for name, tensor in flat.items():
        if not name.startswith(prefix + SEP):
            continue
        *parents, leaf = name[len(prefix) + 1 :].split(SEP)
        level = nested
        for parent in parents:
            level = level.setdefault(parent, {})
        level[leaf] = tensor
    return nested


# -- the archive --------------------------------------------------------------------------------


def pack(folder: Path, archive: Path) -> None:
    """``folder``'s files into an uncompressed tar at ``archive``, written beside it and renamed."""

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(folder.iterdir()):
                if _allowed(path.name) and path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=path.name, recursive=False)

    atomic_write(archive, write)


def unpack(archive: Path, folder: Path) -> dict:
    """Check every member of ``archive``, then copy the files into the empty ``folder``; return
    the state's plain fields (``state.json``). Raises ``UnsafeCheckpoint`` for anything but
    regular files with the names ``pack`` writes."""
    with tarfile.open(archive, "r:") as tar:
        members = []
        for member in tar:
            members.append(member)
            if len(members) > MAX_MEMBERS:
                raise UnsafeCheckpoint(f"more than {MAX_MEMBERS} members")
            if not member.isreg():
                raise UnsafeCheckpoint(f"{member.name!r} is not a regular file")
            if not _allowed(member.name):
                raise UnsafeCheckpoint(f"a member named {member.name!r}")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise UnsafeCheckpoint("a member named twice")
        if STATE not in names or METADATA not in names:
            raise UnsafeCheckpoint(f"no {STATE} or {METADATA}")
        for member in members:
            _copy(tar, member, folder / member.name)
    try:
        state = json.loads((folder / STATE).read_text())
    except ValueError as e:
        raise UnsafeCheckpoint(f"{STATE} is not JSON: {e}") from e
    if not isinstance(state, dict):
        raise UnsafeCheckpoint(f"{STATE} is not an object")
    return state


def _allowed(name: str) -> bool:
    return name in (STATE, METADATA) or _SHARD.fullmatch(name) is not None


def _copy(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None  # a regular file
    # O_EXCL | O_NOFOLLOW: never through a link, never over a file already there.
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with source, os.fdopen(fd, "wb") as out:
        _stream(source.read, out.write)


def _stream(read: Callable[[int], bytes], write: Callable[[bytes], Any]) -> None:
    while chunk := read(1 << 20):
        write(chunk)


def write_state(folder: Path, state: dict) -> None:
    (folder / STATE).write_text(json.dumps(state))


def is_archive(path: Path) -> bool:
    """Whether ``path`` is a sharded checkpoint's archive (a one-device checkpoint is a
    ``torch.save`` zip)."""
    return path.is_file() and tarfile.is_tarfile(path)


# -- the training state ---------------------------------------------------------------------------

WORLD_SIZE_MISMATCH = "world_size_mismatch"


def save(path: Path, state: TrainingState, gang: "Gang") -> None:
    """Every rank writes its shards of ``state``; rank 0 then writes its plain fields and packs
    the folder into ``path``. Collective."""
    gang.saves += 1
    folder = gang.scratch / f"save-{gang.saves}"
    rank = str(gang.rank)
    tensors: dict[str, Any] = {
        "models": state.models,
        "optimizer": state.optimizer["state"],
        "rng": {rank: state.rng},
    }
    if state.cuda_rng is not None:
        tensors["cuda_rng"] = {rank: state.cuda_rng}
    if state.best_weights is not None:
        tensors["best_weights"] = state.best_weights
    save_folder(folder, flatten(tensors), gang.control)
    if not gang.leader:
        return
    plain = {f.name: getattr(state, f.name) for f in fields(state)}
    plain |= {
        "models": list(state.models),  # the phases it holds
        "optimizer": {"param_groups": state.optimizer["param_groups"]},
        "rng": None,
        "cuda_rng": state.cuda_rng is not None,
        "best_weights": state.best_weights is not None,
        "world_size": gang.world_size,
    }
    write_state(folder, plain)
    path.parent.mkdir(parents=True, exist_ok=True)
    pack(folder, path)
    shutil.rmtree(folder, ignore_errors=True)


def load(path: Path, gang: "Gang", fresh: Callable[[], Trainable]) -> TrainingState | None:
    """The checkpoint at ``path`` (None: there is none), every rank reading its own shards.
    ``fresh()`` builds a student and its optimizer as a run's are (sharded alike), for the
    tensors to be read into. Rank 0 unpacks the archive for every rank; raises on every rank
    when it cannot, or when a tensor cannot be read (rank 0's error says why). Collective."""
    if not gang.agree(path.exists()):
        return None
    folder = gang.scratch / "resume"
    problem: Exception | None = None
    if gang.leader:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        try:
            unpack(path, folder)
        except (UnsafeCheckpoint, tarfile.TarError, OSError) as e:
            problem = e
    if not gang.agree(problem is None):
        raise problem or UnsafeCheckpoint("rank 0 could not read it")
    plain = json.loads((folder / STATE).read_text())
    if plain.get("version") != VERSION:
        raise ForeignCheckpoint(f"version {plain.get('version')}, not {VERSION}")
    # Templates: fresh models (and the run under way's optimizer) shaped and sharded as the
    # runs will be; the shards are read into them in place.
    models = {phase: fresh() for phase in plain["models"]}
    model, optimizer = models[plain["phase"]]
    rank = str(gang.rank)
    template: dict[str, Any] = {
        "models": {phase: m.state_dict() for phase, (m, _) in models.items()},
        "optimizer": get_optimizer_state_dict(model, optimizer)["state"],
        "rng": {rank: torch.get_rng_state()},
    }
    if plain["cuda_rng"]:
        template["cuda_rng"] = {rank: torch.cuda.get_rng_state(gang.device)}
    if plain["best_weights"]:
        template["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flat = flatten(template)
    load_folder(folder, flat, gang.control)
    tensors = {
        "models": unflatten(flat, "models"),
        "optimizer": {
            "state": unflatten(flat, "optimizer"),
            "param_groups": plain["optimizer"]["param_groups"],
        },
        "rng": flat[f"rng{SEP}{rank}"],
        "cuda_rng": flat.get(f"cuda_rng{SEP}{rank}"),
        "best_weights": unflatten(flat, "best_weights") if plain["best_weights"] else None,
    }
    names = {f.name for f in fields(TrainingState)}
    return TrainingState(**{k: v for k, v in plain.items() if k in names} | tensors)


def optimizer_state(run: TrainingRun) -> dict:
    """The optimizer's state keyed by parameter name (sharded as the parameters are), and its
    param_groups (plain values)."""
    return dict(get_optimizer_state_dict(run.model, run.optimizer))


def load_optimizer(run: TrainingRun, state: dict) -> None:
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in state["param_groups"]
    ]  # JSON made adamw's betas a list
    set_optimizer_state_dict(run.model, run.optimizer, state | {"param_groups": groups})


def check_world_size(path: Path, world_size: int) -> None:
    """Refuse to resume from a checkpoint written by another number of ranks: its shards do not
    fit this run's (a checkpoint of neither kind is left to the reader, which ignores it)."""
    written = _written_by(path)
    if written is None or written == world_size:
        return
    raise EngineError(
        f"This job's checkpoint was written by a run on {written} device(s) and this run has "
        f"{world_size}; run the job on {written} device(s) again to resume it, or delete its "
        "checkpoint to start over.",
        code=WORLD_SIZE_MISMATCH,
    )


def _written_by(path: Path) -> int | None:
    """How many ranks wrote ``path``: 1 for a one-device checkpoint (a ``torch.save`` zip), the
    number a sharded archive's state.json says, None when it is neither (or missing)."""
    if not path.is_file():
        return None
    if not tarfile.is_tarfile(path):  # first: the shards in an archive are zips themselves
        return 1 if zipfile.is_zipfile(path) else None
    try:
        with tarfile.open(path, "r:") as tar:
            member = tar.getmember(STATE)
            source = tar.extractfile(member) if member.isreg() else None
            if source is None:
                return None
            with source:
                written = json.loads(source.read(1 << 24)).get("world_size")
    except (tarfile.TarError, OSError, KeyError, ValueError, AttributeError):
        return None
    return written if type(written) is int else None
