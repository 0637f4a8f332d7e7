"""A stored language model's vocabulary (its tokens by id), read from the upload without loading
the model: from a Hugging Face archive's ``tokenizer.json`` (``model.vocab`` and ``added_tokens``)
or ``vocab.json`` with ``added_tokens.json``, and from a GGUF file's ``tokenizer.ggml.tokens``
(file_rules/gguf.py's bounded reader). Torch-free, and bounded: the one tokenizer file read is at
most ``MAX_TOKENIZER_BYTES``.

Where the tokens cannot be read cheaply, ``stored_tokens`` answers None and the worker's check of
its loaded tokenizers is the only one: a tokenizer that is a sentencepiece model alone, and a
compressed tar archive over ``MAX_STREAMED_ARCHIVE`` (it can only be read from its start).
"""

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, BinaryIO, cast

from app import storage
from app.models import File
from file_rules.archives import ArchiveRefused, member_path
from file_rules.gguf import GGUFRefused, read_gguf_tokens

Tokens = tuple[str | None, ...]  # by id; None for an id that no token has

MAX_TOKENIZER_BYTES = 50 * 1024 * 1024
MAX_STREAMED_ARCHIVE = 1024**3
MAX_TOKENS = 4_000_000
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_WANTED = ("tokenizer.json", "vocab.json", "added_tokens.json")


def stored_tokens(file: File) -> Tokens | None:
    """The tokens of a stored ``hf_archive`` or ``gguf`` file, or None where they cannot be read
    (see the module's docstring)."""
    with _opened(file) as f:
        if file.format == "gguf":
            try:
                return read_gguf_tokens(f, file.bytes)
            except GGUFRefused:
                return None
        if file.format == "hf_archive":
            members = _tokenizer_members(f, file.bytes, str(file.meta.get("root") or ""))
            return _tokens(members)
    return None


@contextmanager
def _opened(file: File) -> Iterator[BinaryIO]:
    store = storage.get_store()
    key = storage.file_key(file.id)
    path = store.local_path(key)
    if path is not None:
        with path.open("rb") as f:
            yield f
        return
    with io.BufferedReader(_Ranged(store, key, file.bytes), buffer_size=storage.CHUNK) as f:
        yield cast(BinaryIO, f)


class _Ranged(io.RawIOBase):
    """A stored object read by byte ranges, so that a zip's directory at its end is read without
    fetching the whole archive from object storage."""

    def __init__(self, store: storage.Store, key: str, size: int) -> None:
        self.store, self.key, self.size, self.position = store, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        stop = min(self.position + len(buffer), self.size)
        if stop <= self.position:
            return 0
        data = b"".join(self.store.open(self.key, self.position, stop).chunks)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _tokenizer_members(f: BinaryIO, size: int, root: str) -> dict[str, bytes]:
    """The tokenizer files of the model folder at ``root``, by name, each bounded."""
    prefix = f"{root}/" if root else ""
    wanted = {prefix + name: name for name in _WANTED}
    if zipfile.is_zipfile(f):
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            return {
                wanted[name]: _bounded(zf.open(info), info.file_size)
                for info in zf.infolist()
                if (name := _normal(info.filename)) in wanted and not info.is_dir()
            }
    f.seek(0)
    if f.read(6).startswith(_COMPRESSED) and size > MAX_STREAMED_ARCHIVE:
        return {}
    f.seek(0)
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=f, mode="r:*") as tar:
        for member in tar:
            name = _normal(member.name) if member.isreg() else None
            stream = tar.extractfile(member) if name in wanted else None
            if name is not None and stream is not None:
                found[wanted[name]] = _bounded(stream, member.size)
            if "tokenizer.json" in found:
                break
    return found


def _normal(name: str) -> str | None:
    try:
        return member_path(name)
    except ArchiveRefused:
        return None


def _bounded(stream: IO[bytes], size: int) -> bytes:
    with stream:
        data = stream.read(MAX_TOKENIZER_BYTES + 1) if size <= MAX_TOKENIZER_BYTES else b""
    return data if len(data) <= MAX_TOKENIZER_BYTES else b""


def _tokens(members: dict[str, bytes]) -> Tokens | None:
    if "tokenizer.json" in members:
        tokenizer = _json(members["tokenizer.json"])
        model = tokenizer.get("model") if isinstance(tokenizer, dict) else None
        vocab = _vocab(model.get("vocab") if isinstance(model, dict) else None)
        added = tokenizer.get("added_tokens") if isinstance(tokenizer, dict) else None
        for token in added if isinstance(added, list) else []:
            if isinstance(token, dict):
                vocab.update(_vocab({token.get("content"): token.get("id")}))
        return _by_id(vocab)
    if "vocab.json" in members:
        vocab = _vocab(_json(members["vocab.json"]))
        vocab.update(_vocab(_json(members.get("added_tokens.json", b"{}"))))
        return _by_id(vocab)
    return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _vocab(vocab: Any) -> dict[int, str]:
    """Token by id from a ``{token: id}`` object, or a unigram model's ``[[token, score], ...]``."""
    if isinstance(vocab, list):
        return {
            i: entry[0]
            for i, entry in enumerate(vocab)
            if isinstance(entry, list) and entry and isinstance(entry[0], str)
        }
    if isinstance(vocab, dict):
        return {
            i: token
            for token, i in vocab.items()
            if isinstance(token, str) and isinstance(i, int) and not isinstance(i, bool) and i >= 0
        }
    return {}


def _by_id(vocab: dict[int, str]) -> Tokens | None:
    if not vocab or max(vocab) >= MAX_TOKENS:
        return None
    return tuple(vocab.get(i) for i in range(max(vocab) + 1))
