"""A language model's teacher-cache entries between a worker and the shared store
(worker/staging.py): a stored signal directory (written by lm/signal.py's writer) and the
completions of prompt-only data go into the bucket as the engine reports them, and a worker that
has never seen them fetches them before its engine runs. S3 is moto's server over HTTP."""

import shutil
from pathlib import Path

import pytest
import torch

from app import storage
from worker.engine.lm.signal import MANIFEST, SignalReader, SignalWriter, TopKSignal
from worker.staging import CACHE_POINTERS, Staging

INPUTS = "1" * 64  # a cache_inputs key
OTHER_INPUTS = "2" * 64
KEY = "a" * 64  # a signal_key, or a completions key
K = 4


def write_signal(directory: Path, sequences: int = 5) -> Path:
    """A real signal of ``sequences`` sequences, two per shard: three shards and a manifest."""
    torch.manual_seed(0)
    with SignalWriter(directory, K, shard_size=2) as writer:
        for length in range(1, sequences + 1):
            logprobs = torch.randn(length, K).log_softmax(-1) - 0.1
            writer.add(TopKSignal(torch.randint(0, 50, (length, K)), logprobs, torch.rand(length)))
    return directory


class Uploads:
    """The keys the worker puts into the store, in order."""

    def __init__(self, staging: Staging, monkeypatch: pytest.MonkeyPatch) -> None:
        self.keys: list[str] = []
        for method in ("put", "put_bytes"):
            real = getattr(staging.store, method)
            monkeypatch.setattr(staging.store, method, self._spy(real))

    def _spy(self, real):  # type: ignore[no-untyped-def]
        def put(key: str, value: object) -> None:
            self.keys.append(key)
            real(key, value)

        return put


def bucket_keys(under: str) -> list[str]:
    return sorted(storage.get_store().keys(under))


def forget_copies() -> None:
    """This worker becomes a machine that has never seen the cache."""
    shutil.rmtree(storage.root() / storage.TEACHER_CACHE, ignore_errors=True)


def test_a_signal_goes_into_the_bucket_shards_first_and_manifest_last(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = Staging("job_a")
    signal = write_signal(staging.cache_dir(INPUTS) / "signals" / KEY)
    (signal / f".{MANIFEST}.123.tmp").write_text("a writer's leftover")
    uploads = Uploads(staging, monkeypatch)

    staging.put_teacher_cache(signal, INPUTS)

    prefix = f"{storage.TEACHER_CACHE}/{INPUTS}/signals/{KEY}"
    shards = [f"{prefix}/shard-{i:05d}.safetensors.xz" for i in range(3)]
    assert uploads.keys == [*shards, f"{prefix}/{MANIFEST}"]
    assert bucket_keys(prefix) == sorted([*shards, f"{prefix}/{MANIFEST}"])
    assert bucket_keys(CACHE_POINTERS) == []  # a pointer names a classifier's entry only

    uploads.keys.clear()
    staging.put_teacher_cache(signal, INPUTS)  # the next job that uses it: stored already
    assert uploads.keys == []


def test_a_machine_that_never_saw_the_signal_fetches_it_whole(s3_env: dict[str, str]) -> None:
    staging = Staging("job_a")
    signal = write_signal(staging.cache_dir(INPUTS) / "signals" / KEY)
    completions = staging.cache_dir(INPUTS) / "completions" / f"{KEY}.jsonl"
    completions.parent.mkdir()
    completions.write_text('{"prompt": "Hi", "completion": " there."}\n')
    staging.put_teacher_cache(signal, INPUTS)
    staging.put_teacher_cache(completions, INPUTS)
    expected = SignalReader(signal).batch(range(5))
    forget_copies()

    Staging("job_b").fetch_teacher_cache(INPUTS)

    fetched = SignalReader(Staging("job_b").cache_dir(INPUTS) / "signals" / KEY).batch(range(5))
    for field in ("ids", "logprobs", "tail"):
        torch.testing.assert_close(getattr(fetched, field), getattr(expected, field))
    assert completions.read_text() == '{"prompt": "Hi", "completion": " there."}\n'


def test_a_signal_without_its_manifest_in_the_bucket_is_not_fetched(
    s3_env: dict[str, str],
) -> None:
    staging = Staging("job_a")
    signal = write_signal(staging.cache_dir(INPUTS) / "signals" / KEY)
    prefix = f"{storage.TEACHER_CACHE}/{INPUTS}/signals/{KEY}"
    store = storage.get_store()
    store.put(f"{prefix}/shard-00000.safetensors.xz", signal / "shard-00000.safetensors.xz")
    half = "b" * 64  # a manifest that counts a shard the bucket lacks
    store.put(f"{storage.TEACHER_CACHE}/{INPUTS}/signals/{half}/{MANIFEST}", signal / MANIFEST)
    forget_copies()

    staging.fetch_teacher_cache(INPUTS)

    signals = staging.cache_dir(INPUTS) / "signals"
    assert not (signals / KEY).exists()
    assert not (signals / half / MANIFEST).exists()


def test_a_signal_in_another_inputs_cache_is_neither_stored_nor_fetched(
    s3_env: dict[str, str],
) -> None:
    staging = Staging("job_a")
    elsewhere = write_signal(staging.cache_dir(OTHER_INPUTS) / "signals" / KEY)

    with pytest.raises(ValueError, match="not an entry"):
        staging.put_teacher_cache(elsewhere, INPUTS)

    staging.put_teacher_cache(elsewhere, OTHER_INPUTS)  # its own job's: stored
    forget_copies()
    staging.fetch_teacher_cache(INPUTS)
    assert not staging.cache_dir(INPUTS).exists()


@pytest.mark.parametrize(
    "name",
    [
        "signals/" + "A" * 64,  # not how the engine names one
        "signals/" + "a" * 64 + "/shard-00000.safetensors.xz",  # a piece, not the signal
        "completions/" + "a" * 64 + ".json",
        "completions/../" + "a" * 64 + ".safetensors",
    ],
)
def test_what_the_engine_does_not_write_is_refused(s3_env: dict[str, str], name: str) -> None:
    staging = Staging("job_a")
    path = staging.cache_dir(INPUTS) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")

    with pytest.raises(ValueError):
        staging.put_teacher_cache(path, INPUTS)

    assert bucket_keys(storage.TEACHER_CACHE) == []


def test_an_incomplete_or_linked_signal_is_refused(s3_env: dict[str, str], tmp_path: Path) -> None:
    staging = Staging("job_a")
    signals = staging.cache_dir(INPUTS) / "signals"
    no_manifest = write_signal(signals / ("c" * 64))
    (no_manifest / MANIFEST).unlink()
    missing_shard = write_signal(signals / ("d" * 64))
    (missing_shard / "shard-00002.safetensors.xz").unlink()
    linked = write_signal(signals / ("e" * 64))
    secret = tmp_path / "secret"
    secret.write_text("the worker's own file")
    (linked / "shard-00001.safetensors.xz").unlink()
    (linked / "shard-00001.safetensors.xz").symlink_to(secret)

    for signal in (no_manifest, missing_shard, linked):
        with pytest.raises(ValueError):
            staging.put_teacher_cache(signal, INPUTS)

    assert bucket_keys(storage.TEACHER_CACHE) == []


def test_a_signal_directory_reached_through_a_link_is_refused(
    s3_env: dict[str, str], tmp_path: Path
) -> None:
    staging = Staging("job_a")
    real = write_signal(tmp_path / "outside" / KEY)
    signals = staging.cache_dir(INPUTS) / "signals"
    signals.mkdir(parents=True)
    (signals / KEY).symlink_to(real)

    with pytest.raises(ValueError, match="link"):
        staging.put_teacher_cache(signals / KEY, INPUTS)

    assert bucket_keys(storage.TEACHER_CACHE) == []


def test_with_the_local_store_nothing_is_copied(service_env: dict[str, str]) -> None:
    staging = Staging("job_a")
    signal = write_signal(staging.cache_dir(INPUTS) / "signals" / KEY)

    staging.put_teacher_cache(signal, INPUTS)
    staging.fetch_teacher_cache(INPUTS)

    assert signal.is_relative_to(storage.root()) and (signal / MANIFEST).is_file()
    assert not staging.copies
