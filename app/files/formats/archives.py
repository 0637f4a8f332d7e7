"""What every zip and tar must satisfy (file_rules/archives.py, the rules the worker applies too),
plus what only an upload is checked for: encryption and a bomb's expansion ratio."""

import stat
import zipfile

from app.files import limits
from app.files.formats.errors import UnsafeFile, UnsupportedFormat
from file_rules.archives import ArchiveListing, ArchiveRefused


class ArchiveGuard:
    """Checks members as they are listed: paths that stay inside, no links, no bombs."""

    def __init__(self, archive_bytes: int, where: str) -> None:
        bounds = limits.current().limits
        self.where = where
        self.listing = ArchiveListing(
            bounds.unpacked_bytes, archive_bytes, max_ratio=bounds.expansion_ratio
        )

    def admit(
        self,
        name: str,
        size: int,
        *,
        is_dir: bool = False,
        link: bool = False,
        special: bool = False,
    ) -> None:
        try:
            self.listing.admit(name, size, is_dir=is_dir, link=link, special=special)
        except ArchiveRefused as exc:
            raise UnsafeFile(f"{exc} (in the {self.where})") from exc
        limits.current().check_time()


def guard_zip(zf: zipfile.ZipFile, archive_bytes: int, where: str) -> list[zipfile.ZipInfo]:
    guard = ArchiveGuard(archive_bytes, where)
    infos = zf.infolist()
    for info in infos:
        if info.flag_bits & 0x1:
            raise UnsupportedFormat(
                f"The {where} member '{info.filename}' is encrypted; upload an unencrypted archive."
            )
        mode = info.external_attr >> 16
        guard.admit(info.filename, info.file_size, is_dir=info.is_dir(), link=stat.S_ISLNK(mode))
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
