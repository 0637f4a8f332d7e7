"""What every zip and tar must satisfy: paths that stay inside, no links, no duplicates, no
bombs."""

import re
import stat
import zipfile

from app.files.formats.errors import UnsafeFile, UnsupportedFormat

MAX_ARCHIVE_MEMBERS = 100_000
MAX_UNCOMPRESSED = 20 * 1024**3
MAX_RATIO, RATIO_FLOOR = 100, 1024**3  # ratio checked only once an archive expands past 1 GiB


class ArchiveGuard:
    """Checks members as they are listed: paths that stay inside, no links, no bombs."""

    def __init__(self, archive_bytes: int, where: str) -> None:
        self.archive_bytes = archive_bytes
        self.where = where
        self.names: set[str] = set()
        self.total = 0

    def admit(self, name: str, size: int, *, link: bool = False, special: bool = False) -> None:
        if _escapes(name):
            raise UnsafeFile(
                f"The {self.where} member '{name}' has an absolute path or climbs "
                "out of the archive with '..'; archives must stay inside their own "
                "folder."
            )
        if link or special:
            kind = "a link" if link else "a device or pipe"
            raise UnsafeFile(
                f"The {self.where} member '{name}' is {kind}; archives may hold "
                "only regular files and folders."
            )
        if name in self.names:
            raise UnsafeFile(
                f"The {self.where} lists '{name}' twice; readers disagree on which "
                "copy counts, so the archive is refused."
            )
        self.names.add(name)
        if len(self.names) > MAX_ARCHIVE_MEMBERS:
            raise UnsafeFile(f"The {self.where} has more than {MAX_ARCHIVE_MEMBERS} members.")
        self.total += size
        self._check_total()

    def _check_total(self) -> None:
        ratio = self.total / max(self.archive_bytes, 1)
        if self.total > MAX_UNCOMPRESSED or (self.total > RATIO_FLOOR and ratio > MAX_RATIO):
            raise UnsafeFile(
                f"The {self.where} expands to {self.total} bytes from "
                f"{self.archive_bytes} (more than {MAX_UNCOMPRESSED} bytes or "
                f"{MAX_RATIO}x); it looks like an archive bomb."
            )


def _escapes(name: str) -> bool:
    path = name.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or "\x00" in path:
        return True
    return ".." in path.split("/")


def guard_zip(zf: zipfile.ZipFile, archive_bytes: int, where: str) -> list[zipfile.ZipInfo]:
    guard = ArchiveGuard(archive_bytes, where)
    infos = zf.infolist()
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsupportedFormat(
                f"The {where} member '{info.filename}' is encrypted; upload an unencrypted archive."
            )
        mode = info.external_attr >> 16
        guard.admit(info.filename, info.file_size, link=stat.S_ISLNK(mode))
    return infos


def files(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """The members that are files, not folders."""
    return [i for i in infos if not i.is_dir()]


def single_root(names: list[str]) -> str | None:
    """The one top-level folder every member sits in, if there is one."""
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) == 1 and all("/" in n for n in names):
        return roots.pop()
    return None
