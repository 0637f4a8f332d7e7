"""The rules both the upload check and the worker apply to an archive's members."""

import tarfile

import pytest

from file_rules.archives import ArchiveRefused, data_filtered


def member(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


@pytest.mark.parametrize("name", ["../outside", "model/../../outside"])
def test_tarfiles_data_filter_refuses_what_leaves_the_folder(name: str) -> None:
    with pytest.raises(ArchiveRefused, match="is refused"):
        data_filtered(member(name))


def test_tarfiles_data_filter_refuses_devices() -> None:
    device = member("model/tty")
    device.type = tarfile.CHRTYPE
    with pytest.raises(ArchiveRefused, match="is refused"):
        data_filtered(device)


def test_tarfiles_data_filter_drops_set_user_id_and_group_write() -> None:
    assert data_filtered(member("model/config.json", 0o6777)).mode == 0o755
