"""handmesh.atomic: a failed write leaves the old file (or folder) and no temporary behind; a good one replaces it."""

from __future__ import annotations

import os
import stat

import pytest

from handmesh.atomic import atomic_path, replace_path, write_bytes_atomic


def test_write_bytes_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "scores.json"
    target.write_bytes(b"old")
    write_bytes_atomic(target, "new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_a_failure_inside_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "model.ckpt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_keyboard_interrupt_also_cleans_up(tmp_path):
    target = tmp_path / "a.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writing_nothing_is_an_error_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "sheet.png"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target):
            pass  # e.g. cv2.imwrite returned False
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.png"]


def test_the_temporary_keeps_the_name_and_sits_in_the_same_folder(tmp_path):
    target = tmp_path / "overlay.png"
    with atomic_path(target) as temporary:
        assert temporary.name == "overlay.png" and temporary.parent.parent == tmp_path
        assert not temporary.exists()
        temporary.write_bytes(b"png")
    assert target.read_bytes() == b"png"


def test_files_get_the_usual_permissions_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_bytes_atomic(tmp_path / "MANO_RIGHT.pkl", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_folder_replaces_a_folder_and_a_failure_keeps_the_old_one(tmp_path):
    target = tmp_path / "model.hub"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as temporary:
            temporary.mkdir()
            (temporary / "config.json").write_text("half")
            raise ValueError
    assert (target / "config.json").read_text() == "old"
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "model.safetensors").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.hub"]


def test_replace_path_puts_the_old_folder_back_when_the_rename_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(FileNotFoundError):
        replace_path(tmp_path / "missing", target)
    assert (target / "keep").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
