"""A job's files on this worker: fetched from the shared store before the engine runs, and put
back as the engine writes them.

With the local store every path here is the object's own file in the directory the machines
share, so nothing is copied and every put does nothing. With S3 the worker keeps copies under its
``DISTILL_STORAGE_DIR``, laid out as the store is: uploaded files (kept for later jobs, since a
file id's bytes never change), each job's checkpoint and artifacts, and the teacher-output cache.
Any of it may be deleted while no job runs.

The engine runs the teacher, which is code, so a path it hands back is checked before anything is
put into the store: the job's own checkpoint, or an entry in the job's teacher-output cache
directory. That directory is the job's inputs' own (``cache_dir(inputs)``): a job sees and writes
only the entries of jobs on the same teacher and data, so a teacher cannot plant an entry that a
job on another teacher or other data would read. Its entries, as the engine names them:

- ``<key>.safetensors``: a classifier teacher's logits (``teacher_cache.py``);
- ``completions/<key>.jsonl``: the completions a language-model teacher wrote for prompt-only
  data;
- ``signals/<key>/``: a language-model teacher's stored signal (``lm/signal.py``), shards and a
  ``manifest.json`` written last. It goes into the store shards first and manifest last, and
  comes back the same way, so whoever sees a manifest sees a whole signal.
"""

import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from app import storage
from app.models import File, Job
from app.storage.base import read_bytes
from app.storage.local import write_atomically
from worker.engine import EngineError

CACHE_ENTRY = re.compile(r"[0-9a-f]{64}\.safetensors")  # teacher_cache.cache_key + suffix
COMPLETIONS = re.compile(r"completions/[0-9a-f]{64}\.jsonl")
SIGNAL = re.compile(r"signals/[0-9a-f]{64}")  # a directory: lm/signal.signal_key
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
# The engine names a cache entry after the teacher and the training rows it saw, which only it
# can compute. So that a worker can fetch the entry before the engine asks for it, the store also
# keeps, under a key of the job's inputs, the name of the entry a job on those inputs last used.
# A stale pointer costs one download: the engine checks the entry's name itself.
CACHE_POINTERS = f"{storage.TEACHER_CACHE}/inputs"


class Staging:
    def __init__(self, job_id: str):
        self.job_id = job_id
        self.store = storage.get_store()
        self.copies = self.store.local_path(storage.TEACHER_CACHE) is None  # S3: work on copies
        self.output_dir = self._here(storage.artifacts_key(job_id))
        self.checkpoint_path = self._here(storage.checkpoint_key(job_id))

    def cache_dir(self, inputs: str) -> Path:
        """The teacher-output cache of jobs on these ``inputs`` (``cache_inputs``)."""
        return self._here(_cache_prefix(inputs))

    def _here(self, key: str) -> Path:
        """Where this machine keeps the object ``key``: its own file, or this worker's copy."""
        return self.store.local_path(key) or storage.root() / key

    # -- before the engine runs ---------------------------------------------------------------

    def fetch_file(self, file: File) -> Path:
        key = storage.file_key(file.id)
        path = self._here(key)
        if self.copies and not (path.is_file() and path.stat().st_size == file.bytes):
            try:
                self.store.get(key, path)
            except storage.ObjectMissing as e:
                raise EngineError(
                    f"File {file.id} is missing from the store.", code="file_missing"
                ) from e
        return path

    def fetch_checkpoint(self) -> Path:
        """The job's checkpoint path, with the store's checkpoint there if it has one: the job
        may have run on another machine before."""
        if self.copies:
            # None in the store: a fresh job, or one that never got as far as a checkpoint.
            with contextlib.suppress(storage.ObjectMissing):
                self.store.get(storage.checkpoint_key(self.job_id), self.checkpoint_path)
        return self.checkpoint_path

    def fetch_teacher_cache(self, inputs: str) -> None:
        """The cache entries of jobs on these ``inputs`` (``cache_inputs``) that this worker
        lacks: the entry a job last used, and every language model's completions and complete
        signal."""
        if not self.copies:
            return
        self._fetch_last_entry(inputs)
        prefix = _cache_prefix(inputs)
        signals = set()
        for key in self.store.keys(prefix):
            name = key.removeprefix(f"{prefix}/")
            if COMPLETIONS.fullmatch(name) and not (self.cache_dir(inputs) / name).is_file():
                with contextlib.suppress(storage.ObjectMissing):  # deleted since listed
                    self.store.get(key, self.cache_dir(inputs) / name)
            elif name.endswith(f"/{MANIFEST}") and SIGNAL.fullmatch(name[: -len(MANIFEST) - 1]):
                signals.add(name[: -len(MANIFEST) - 1])
        for signal in sorted(signals):
            self._fetch_signal(f"{prefix}/{signal}", self.cache_dir(inputs) / signal)

    def _fetch_last_entry(self, inputs: str) -> None:
        try:
            name = read_bytes(self.store, f"{CACHE_POINTERS}/{inputs}").decode()
        except storage.ObjectMissing:
            return
        here = self.cache_dir(inputs) / name
        if CACHE_ENTRY.fullmatch(name) and not here.is_file():
            # Missing: the pointer outlived its entry, and the engine computes it again.
            with contextlib.suppress(storage.ObjectMissing):
                self.store.get(f"{_cache_prefix(inputs)}/{name}", here)

    def _fetch_signal(self, key: str, here: Path) -> None:
        """A complete signal: its shards, then its manifest, which makes it one."""
        if (here / MANIFEST).is_file():
            return
        try:
            manifest = read_bytes(self.store, f"{key}/{MANIFEST}")
            for shard in _shard_names(manifest):
                if not (here / shard).is_file():
                    self.store.get(f"{key}/{shard}", here / shard)
        except (storage.ObjectMissing, ValueError):
            return  # gone or damaged since it was listed: the engine computes it again
        write_atomically(here / MANIFEST, lambda out: out.write(manifest))

    # -- as the engine writes -----------------------------------------------------------------

    def put_checkpoint(self, path: Path) -> None:
        if path != self.checkpoint_path or not _plain_file(path):
            raise ValueError(f"{path} is not this job's checkpoint")
        self.store.put(storage.checkpoint_key(self.job_id), path)

    def put_teacher_cache(self, path: Path, inputs: str) -> None:
        """Store the entry at ``path`` (a file, or a signal directory) of the job's cache
        directory, unless the store has it already."""
        if not self.copies:
            return
        name = _entry_name(path, self.cache_dir(inputs))
        key = f"{_cache_prefix(inputs)}/{name}"
        if SIGNAL.fullmatch(name):
            self._put_signal(path, key)
            return
        if not _plain_file(path):
            raise ValueError(f"{path} is not a regular file")
        if not self.store.exists(key):
            self.store.put(key, path)
        if CACHE_ENTRY.fullmatch(name):
            self.store.put_bytes(f"{CACHE_POINTERS}/{inputs}", path.name.encode())

    def _put_signal(self, directory: Path, key: str) -> None:
        """The shards the manifest counts, then the manifest; nothing else of the directory."""
        if self.store.exists(f"{key}/{MANIFEST}"):
            return  # content-addressed: whole already
        manifest = directory / MANIFEST
        if not _plain_file(manifest) or manifest.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{directory} holds no complete teacher signal")
        text = manifest.read_bytes()
        shards = [directory / name for name in _shard_names(text)]
        if not all(_plain_file(shard) for shard in shards):
            raise ValueError(f"{directory} lacks shards its manifest counts, or has links")
        for shard in shards:
            self.store.put(f"{key}/{shard.name}", shard)
        self.store.put_bytes(f"{key}/{MANIFEST}", text)  # the bytes checked, not a later file

    def put_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.store.put(storage.artifact_key(self.job_id, path.name), path)

    def release(self) -> None:
        """Drop this worker's copies of the job's checkpoint and artifacts (they are in the
        store now)."""
        if self.copies:
            shutil.rmtree(self.checkpoint_path.parent, ignore_errors=True)


def cache_inputs(session: Session, job_id: str, device: str) -> str:
    """A key of what decides the job's teacher-output cache entry: the teacher, the data, how
    the data is read and split, and the kind of device."""
    job = session.get(Job, job_id)
    assert job is not None
    ids = (job.teacher_file_id, job.train_file_id, job.validation_file_id)
    files = [session.get(File, file_id) if file_id else None for file_id in ids]
    spec = job.spec
    parts = {
        "files": [[f.sha256, f.format] if f else None for f in files],
        "teacher_arch": spec["teacher"].get("arch"),
        "data": {k: v for k, v in spec["data"].items() if not k.endswith("file_id")},
        "seed": spec["hyperparameters"].get("seed"),
        "task": spec.get("task"),
        "device": device.split(":")[0],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cache_prefix(inputs: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", inputs):
        raise ValueError(f"{inputs!r} is not a cache_inputs key")
    return f"{storage.TEACHER_CACHE}/{inputs}"


def _entry_name(path: Path, cache_dir: Path) -> str:
    """``path``'s name in ``cache_dir`` (``x.safetensors``, ``completions/x.jsonl``,
    ``signals/x``), if it is an entry there as the engine names them, reached without links."""
    try:
        name = path.relative_to(cache_dir).as_posix()
    except ValueError:
        name = ""
    if not any(entry.fullmatch(name) for entry in (CACHE_ENTRY, COMPLETIONS, SIGNAL)):
        raise ValueError(f"{path} is not an entry of this job's teacher-output cache")
    inside = cache_dir / name.split("/")[0]
    if inside.is_symlink() or path.is_symlink():
        raise ValueError(f"{path} is reached through a link")
    return name


def _shard_names(manifest: bytes) -> list[str]:
    """The shards a signal's ``manifest.json`` counts; ValueError if it is not one."""
    try:
        shards = json.loads(manifest)["shards"]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a teacher signal manifest: {e}") from e
    if not isinstance(shards, int) or not 0 <= shards < 10**5:
        raise ValueError(f"not a teacher signal manifest: shards = {shards!r}")
    return [f"shard-{i:05d}.safetensors.xz" for i in range(shards)]  # lm/signal's names


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()
