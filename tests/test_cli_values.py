"""Command-line values: intrinsics and positive numbers are refused unless finite and valid; outputs are replaced
only with --overwrite."""

from __future__ import annotations

import pytest

from handmesh.cli_values import check_can_write, checkpoint_file, parse_intrinsics, positive_finite
from handmesh.errors import HandmeshError


def test_intrinsics_parse_four_comma_separated_numbers():
    assert parse_intrinsics("500,510.5, 112,96") == (500.0, 510.5, 112.0, 96.0)
    assert parse_intrinsics(None) is None


@pytest.mark.parametrize("text", ["nan,500,112,112", "500,inf,112,112", "500,500,nan,112", "0,500,112,112",
                                  "-1,500,112,112", "500,500,112", "a,b,c,d"])
def test_bad_intrinsics_are_refused(text):
    with pytest.raises(HandmeshError, match="fx,fy,cx,cy"):
        parse_intrinsics(text)


def test_intrinsics_with_spaces_say_commas():
    with pytest.raises(HandmeshError, match="commas"):
        parse_intrinsics("500 500 112 112")


@pytest.mark.parametrize("value", [0, -2, float("nan"), float("inf")])
def test_positive_finite_refuses(value):
    with pytest.raises(HandmeshError, match="--scale"):
        positive_finite(value, "--scale")


def test_check_can_write(tmp_path):
    target = tmp_path / "sheet.png"
    assert check_can_write(target, overwrite=False) == target
    target.write_bytes(b"work")
    with pytest.raises(HandmeshError, match="--overwrite"):
        check_can_write(target, overwrite=False)
    assert check_can_write(target, overwrite=True) == target


def test_a_checkpoint_folder_lists_its_ckpt_files(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(HandmeshError, match="holds no .ckpt file"):
        checkpoint_file(run)
    for name in ("best.ckpt", "last.ckpt"):
        (run / "checkpoints" / name).write_bytes(b"")
    with pytest.raises(HandmeshError, match="is a folder") as caught:
        checkpoint_file(run, "--ckpt_path")
    assert str(run / "checkpoints" / "best.ckpt") in str(caught.value) and "--ckpt_path" in str(caught.value)
    assert checkpoint_file(run / "checkpoints" / "best.ckpt") == run / "checkpoints" / "best.ckpt"
