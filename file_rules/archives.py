"""What a zip or tar may hold: paths that stay inside, no links, no duplicates, a bounded number of
members and bytes, and in a Hugging Face model folder no Python code and no pickles.

The API checks an upload's listing with these rules; the worker checks again while it unpacks
(and counts the bytes it actually writes, since headers can lie).
"""

import re
import tarfile
from pathlib import PurePosixPath

from file_rules.pickles import PICKLE_SUFFIXES

MAX_MEMBERS = 10_000

_FLAT = "only plain files and folders are accepted."
_RELATIVE = "archive the model folder with relative paths (e.g. `zip -r model.zip model/`)."


class ArchiveRefused(ValueError):
    """The archive breaks a rule; the message says which member and what to do instead."""


class ArchiveListing:
    """Admits an archive's members one at a time, as they are listed."""

    def __init__(self, max_bytes: int, archive_bytes: int = 0, max_ratio: float = 0) -> None:
        """``max_bytes`` bounds the declared unpacked size; with ``max_ratio``, so does
        ``max_ratio`` times ``archive_bytes`` (the compressed size) once past a mebibyte."""
        self.max_bytes = max_bytes
        self.archive_bytes = archive_bytes
        self.max_ratio = max_ratio
        self.files: set[str] = set()
        self.count = 0
        self.total = 0

    def admit(
        self,
        raw: str,
        size: int,
        *,
        is_dir: bool = False,
        link: bool = False,
        special: bool = False,
    ) -> str:
        """The member's normalised relative path ("" for the folder itself), or a refusal."""
        name = member_path(raw)
        if link or special:
            kind = "a link" if link else "a device or special file"
            raise ArchiveRefused(f"The archive member '{raw}' is {kind}; {_FLAT}")
        self.count += 1
        if self.count > MAX_MEMBERS:
            raise ArchiveRefused(f"The archive has more than the {MAX_MEMBERS} members allowed.")
        if not is_dir:
            if name == "" or name in self.files:
                raise ArchiveRefused(
                    f"The archive lists '{raw}' twice or a file without a name; readers "
                    "disagree on which copy counts, so the archive is refused."
                )
            self.files.add(name)
        self.total += size
        self._check_total()
        return name

    def _check_total(self) -> None:
        if self.total > self.max_bytes:
            raise ArchiveRefused(
                f"The archive unpacks to {self.total} bytes, more than the {self.max_bytes} "
                "allowed."
            )
        ratio = self.total / max(self.archive_bytes, 1)
        if self.max_ratio and self.total > 2**20 and ratio > self.max_ratio:
            raise ArchiveRefused(
                f"The archive expands to {self.total} bytes from {self.archive_bytes} "
                f"(more than {self.max_ratio:g}x); it looks like an archive bomb."
            )


def member_path(raw: str) -> str:
    """``raw`` relative to the archive's folder, or a refusal: no absolute paths, no '..', no
    drive letters (backslashes count as separators, as a Windows unzip would treat them)."""
    if raw.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", raw):
        raise ArchiveRefused(f"The archive member '{raw}' has an absolute path; {_RELATIVE}")
    parts = [p for p in re.split(r"[\\/]+", raw) if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"The archive member '{raw}' points outside its folder; {_RELATIVE}")
    if "\0" in raw:
        raise ArchiveRefused(f"The archive has a member with an invalid name {raw!r}.")
    return str(PurePosixPath(*parts)) if parts else ""


def check_model_file(name: str) -> None:
    """A file in a Hugging Face model folder: no Python code, no pickles."""
    if name.endswith(".py"):
        raise ArchiveRefused(
            f"The archive contains Python code ('{name}'): loading it would need "
            "trust_remote_code, which Distillery never enables; only models built into "
            "transformers are accepted."
        )
    if name.endswith(PICKLE_SUFFIXES):
        raise ArchiveRefused(
            f"The archive contains pickled weights or state ('{name}'), which can run code when "
            "loaded; only "
            "safetensors weights are accepted: re-save the model with "
            "model.save_pretrained(folder, safe_serialization=True) and remove that file (and "
            "other *.bin files) from the archive."
        )


def data_filtered(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The member as tarfile's own "data" extraction filter passes it, a second opinion beside
    the rules above (which refuse links outright, where the filter only keeps them inside): no
    absolute or escaping paths, no devices, no set-user-id or group-writable modes."""
    try:
        return tarfile.data_filter(member, "/archive")
    except tarfile.FilterError as e:
        raise ArchiveRefused(f"The archive member '{member.name}' is refused: {e}.") from e
