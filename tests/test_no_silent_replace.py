"""`handmesh synth` and `handmesh view` replace earlier work only with --overwrite, run from outside the repository."""

from __future__ import annotations

from handmesh.cli import main
from handmesh.data.synth import MARKER


def test_synth_replaces_a_set_with_other_settings_only_with_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["synth", "--out", "set", "--train", "1", "--eval", "1", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    marker = (tmp_path / "set" / MARKER).read_bytes()
    assert main(args) == 0  # the same request reuses the set
    capsys.readouterr()
    assert main([*args[:-3], "--seed", "1", "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "seed" in err and "--overwrite" in err and str(tmp_path / "set") in err
    assert (tmp_path / "set" / MARKER).read_bytes() == marker  # untouched
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert (tmp_path / "set" / MARKER).read_bytes() != marker


def test_view_replaces_a_sheet_only_with_overwrite(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"earlier work")
    assert main(["view", str(tiny_root), "--n", "2", "--size", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err and sheet.read_bytes() == b"earlier work"
    assert main(["view", str(tiny_root), "--n", "2", "--size", "64", "--overwrite"]) == 0
    assert sheet.read_bytes().startswith(b"\x89PNG")
