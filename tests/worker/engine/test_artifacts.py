"""``atomic_write``, the one way the engine writes a file that someone else may read."""

from pathlib import Path

import pytest

from worker.engine.artifacts import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "metrics.json", lambda p: p.write_text("old"))

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)

    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    atomic_write(path, lambda p: p.write_text("new"))
    assert path.read_text() == "new"
