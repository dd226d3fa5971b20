"""Folders appear whole or not at all (app/core/storage.py's atomic_dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.storage import atomic_dir


def test_a_filled_folder_replaces_the_old_one_which_stays_whole_until_then(tmp_path: Path) -> None:
    target = tmp_path / "epoch-1"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as staging:
        staging.mkdir()
        (staging / "new.txt").write_text("new")
        assert sorted(path.name for path in target.iterdir()) == ["old.txt"]
    assert sorted(path.name for path in target.iterdir()) == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-1"]


def test_a_block_that_raises_leaves_the_old_folder_and_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "epoch-1"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(OSError, match="disk full"), atomic_dir(target) as staging:
        staging.mkdir()
        (staging / "half.txt").write_text("half")
        raise OSError("disk full")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["epoch-1"]
    assert sorted(path.name for path in target.iterdir()) == ["old.txt"]
